use hftrain::config::Config;

use crate::common::{TempDir, assert_error};

fn load(text: &str) -> anyhow::Result<Config> {
    let dir = TempDir::new();
    let path = dir.path().join("run.toml");
    std::fs::write(&path, text).unwrap();
    let result = Config::load(&path);
    if let Err(e) = &result {
        // Every config error names the file.
        assert!(
            format!("{e:#}").contains(&path.display().to_string()),
            "{e:#}"
        );
    }
    result
}

#[test]
fn shipped_configs_are_valid() {
    let configs = crate::common::repository_root().join("configs");
    let mut names: Vec<String> = std::fs::read_dir(&configs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 8, "{names:?}");
    for name in names {
        let path = configs.join(format!("{name}.toml"));
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(config.name, name, "the name defaults to the file stem");
    }
}

#[test]
fn unknown_key_is_named() {
    assert_error(
        load("[train]\nbatchsize = 3\n"),
        &["unknown field", "batchsize"],
    );
    assert_error(
        load("learning_rate = 3\n"),
        &["unknown field", "learning_rate"],
    );
}

#[test]
fn wrong_type_is_named() {
    assert_error(
        load("[train]\nepochs = \"ten\"\n"),
        &["epochs", "invalid type"],
    );
    assert_error(
        load("[train]\ngradient = \"sideways\"\n"),
        &["gradient", "sideways", "`auto`, `autodiff`, `backprop`"],
    );
    // Hessian-free always takes our backprop: a route set for it is named, not ignored.
    assert_error(
        load("[optimizer]\nkind = \"hessian-free\"\n[train]\ngradient = \"autodiff\"\n"),
        &[
            "train.gradient = \"autodiff\"",
            "hessian-free",
            "remove the setting",
        ],
    );
    assert_error(
        load("[train]\nprecision = \"fp8\"\n"),
        &["precision", "fp8", "`f32`, `bf16`, `f16`"],
    );
    // Hessian-free's exact Hessian products are f32's: half precision set for them is
    // named, not ignored; its Gauss-Newton products take it.
    assert_error(
        load(
            "[optimizer]\nkind = \"hessian-free\"\n[optimizer.hessian_free]\n\
             curvature = \"hessian\"\n[train]\nprecision = \"bf16\"\n",
        ),
        &[
            "train.precision = \"bf16\"",
            "hessian-free",
            "f32",
            "remove the setting",
            "gauss-newton",
        ],
    );
    assert!(
        load("[optimizer]\nkind = \"hessian-free\"\n[train]\nprecision = \"f16\"\n").is_ok(),
        "Gauss-Newton products take f16"
    );
    assert!(
        load("[train]\nprecision = \"f16\"\n").is_ok(),
        "SGD takes f16"
    );
}

#[test]
fn impossible_values_are_named_with_the_expected_range() {
    assert_error(
        load("[train]\nbatch_size = 0\n"),
        &["train.batch_size = 0", "at least 1"],
    );
    assert_error(
        load("[optimizer]\nlr = -0.1\n"),
        &["optimizer.lr = -0.1", "positive"],
    );
    assert_error(
        load("device = \"tpu\"\n"),
        &["device = \"tpu\"", "auto, wgpu, wgpu-cpu, flex"],
    );
    assert_error(load("[optimizer]\nkind = \"lbfgs\"\n"), &["kind", "lbfgs"]);
    assert_error(
        load(
            "[optimizer]\nkind = \"hessian-free\"\n[optimizer.hessian_free]\njudge_on_backtracking_batch = true\n",
        ),
        &[
            "optimizer.hessian_free.judge_on_backtracking_batch = true",
            "backtracking_batch_size = 0",
        ],
    );
    assert_error(
        load("[train]\nbatch_size_milestones = [[1, 2000]]\n"),
        &[
            "train.batch_size_milestones: [1, 2000] starts at epoch 1",
            "epoch 2 or later",
            "train.batch_size = 512",
        ],
    );
    assert_error(
        load("[train]\nbatch_size_milestones = [[5, 4000], [3, 2000]]\n"),
        &[
            "[3, 2000] comes after a milestone at epoch 5",
            "increasing epoch order",
        ],
    );
    assert_error(
        load("[train]\nbatch_size_milestones = [[3, 0]]\n"),
        &["train.batch_size_milestones: [3, 0]", "at least one image"],
    );
    assert_error(
        load("[train]\nbatch_size_milestones = [3, 2000]\n"),
        &["batch_size_milestones", "invalid type"],
    );
    // Several problems are reported together.
    let message = assert_error(
        load("[train]\nepochs = 0\n[checkpoint]\nkeep = 0\n"),
        &["train.epochs = 0", "checkpoint.keep = 0"],
    );
    assert!(message.lines().count() >= 2);
}

#[test]
fn too_many_pooling_layers_are_refused() {
    let layers = (0..6)
        .map(|_| "\"conv 8\", \"max-pool\"")
        .collect::<Vec<_>>()
        .join(", ");
    assert_error(
        load(&format!(
            "[[model.stages]]\nlayers = [{layers}, \"flatten\"]\n"
        )),
        &[
            "model.stages[0].layers[11] = \"max-pool\"",
            "2x2 windows do not fit",
            "a vector of 8 features",
        ],
    );
}

#[test]
fn missing_config_file_is_named() {
    assert_error(
        Config::load(std::path::Path::new("no/such/config.toml")),
        &["no/such/config.toml"],
    );
}

#[test]
fn run_differences_list_each_changed_key() {
    let a = Config::parse("").unwrap();
    let mut b = a.clone();
    crate::common::sgd(&mut b).lr = 0.3;
    b.train.batch_size = 64;
    // Where things are and how often to report do not change the run.
    b.data.dir = "elsewhere".into();
    b.device = hftrain::config::DeviceChoice::Flex;
    b.checkpoint.keep = 9;
    // Nor the arithmetic of the gradient: its route and its precision (the weights are f32
    // in all of them), so a half-precision run can go on where that arithmetic is missing.
    b.train.gradient = hftrain::config::GradientRoute::Autodiff;
    b.train.precision = hftrain::config::Precision::Bf16;
    let diffs = a.run_differences(&b);
    assert_eq!(diffs.len(), 2, "{diffs:?}");
    assert!(
        diffs
            .iter()
            .any(|d| d.starts_with("optimizer.lr: 0.1 vs 0.3")),
        "{diffs:?}"
    );
    assert!(
        diffs
            .iter()
            .any(|d| d.starts_with("train.batch_size: 512 vs 64")),
        "{diffs:?}"
    );
}

#[test]
fn hessian_free_settings_are_checked() {
    let hf = |body: &str| {
        load(&format!(
            "[optimizer]\nkind = \"hessian-free\"\n[optimizer.hessian_free]\n{body}\n"
        ))
    };
    let config = hf("curvature = \"hessian\"").unwrap();
    assert_eq!(
        config.optimizer.hessian_free().unwrap().curvature,
        hftrain::config::CurvatureKind::Hessian
    );
    assert_error(
        hf("curvature = \"newton\""),
        &["newton", "hessian", "gauss-newton"],
    );
    assert_error(hf("cg_iterations = 5"), &["unknown field", "cg_iterations"]);
    assert_error(
        hf("damping_raise = 0.5"),
        &["optimizer.hessian_free.damping_raise = 0.5", "above 1"],
    );
    assert_error(
        hf("initial_damping = 1e9"),
        &["optimizer.hessian_free.initial_damping", "max_damping"],
    );
    assert_error(
        hf("curvature_batch_size = 0"),
        &["optimizer.hessian_free.curvature_batch_size = 0"],
    );
    assert_error(
        hf("warm_start_decay = 1.5"),
        &["optimizer.hessian_free.warm_start_decay = 1.5", "[0, 1]"],
    );
    // Softmax regression: the classifier on the flattened pixels. Without flatten the
    // classifier would get a feature map.
    assert_error(
        load("[model]\nstages = []\n"),
        &["model.stages", "3x32x32 feature map", "flatten"],
    );
    load("[[model.stages]]\nlayers = [\"flatten\"]\n").unwrap();
}

/// The run name becomes `runs/<name>`: a path there would put the run anywhere.
#[test]
fn a_run_name_that_is_a_path_is_refused() {
    for name in ["/x/y", "../../..", "a/b", ".."] {
        assert_error(
            load(&format!("name = {name:?}\n")),
            &[&format!("name = {name:?}"), "plain name", "--out"],
        );
    }
    assert_eq!(load("name = \"my run 2\"\n").unwrap().name, "my run 2");
}

/// One mean and one standard deviation per colour channel, and a spread a network can use.
#[test]
fn normalisation_needs_three_channels_and_a_usable_spread() {
    assert_error(
        load("[data]\nmean = [0.5, 0.5, 0.5, 0.5]\n"),
        &["mean", "expected 3 values", "found 4"],
    );
    assert_error(
        load("[data]\nstd = [0.2, 0.2]\n"),
        &["std", "expected 3 values", "found 2"],
    );
    assert_error(
        load("[data]\nstd = [1e-45, 0.25, 0.25]\n"),
        &["data.std[0]", "at least 0.001"],
    );
}

/// A run that cannot fit in memory is refused at start-up with the settings to change,
/// instead of aborting in an allocation: here 8192 channels at 32x32 for a batch of 4096
/// (at least 256 GiB of activations).
#[test]
fn a_run_too_large_for_memory_is_refused_with_the_setting_to_change() {
    let mut config = Config::parse("name = \"huge\"\n[[model.stages]]\nlayers = [\"conv 8192\", \"conv 8192\", \"global-max-pool\"]\n[train]\nbatch_size = 4096\n").unwrap();
    config.validate().unwrap();
    let network = hftrain::model::Network::new(&config.model, 10).unwrap();
    let (params, activations) = hftrain::memory::lower_bound(&config, &network);
    assert!(activations >= 256 << 30, "{activations}");
    let message = assert_error(
        hftrain::memory::check_fits(&config, &network, 64 << 30),
        &[
            "needs at least",
            "GiB",
            "train.batch_size",
            "model.stages",
            "64.0 GiB available",
        ],
    );
    assert!(params > 0, "{message}");
    // A batch that grows later in the run is what memory must hold.
    let mut growing = Config::parse("name = \"growing\"").unwrap();
    let network = hftrain::model::Network::new(&growing.model, 10).unwrap();
    let (_, first) = hftrain::memory::lower_bound(&growing, &network);
    growing.train.batch_size_milestones = vec![[3, 4 * growing.train.batch_size]];
    assert_eq!(
        hftrain::memory::lower_bound(&growing, &network).1,
        4 * first
    );
    // The default run fits in a few GiB.
    let default = Config::parse("name = \"default\"").unwrap();
    let network = hftrain::model::Network::new(&default.model, 10).unwrap();
    hftrain::memory::check_fits(&default, &network, 4 << 30).unwrap();
    // And `train` refuses the large one before allocating anything.
    let dir = crate::common::TempDir::new();
    config.device = hftrain::config::DeviceChoice::Flex;
    config.data.dir = crate::common::synthetic_binary();
    let refused = hftrain::train::run(hftrain::train::TrainRequest {
        config: Some(config),
        out_dir: Some(dir.path().join("run")),
        ..Default::default()
    });
    assert_error(refused, &["needs at least", "train.batch_size"]);
}

/// Each optimizer takes its own settings: another optimizer's key is refused with its name
/// and whose it is (an SGD run would otherwise ignore `beta1` silently).
#[test]
fn a_setting_of_another_optimizer_is_refused_by_name() {
    assert_error(
        load("[optimizer]\nkind = \"sgd\"\nbeta1 = 0.9\n"),
        &[
            "optimizer.beta1",
            "adam and adamw",
            "kind = \"sgd\"",
            "momentum",
        ],
    );
    assert_error(
        load("[optimizer]\nkind = \"hessian-free\"\nlr = 0.1\n"),
        &[
            "optimizer.lr",
            "sgd",
            "kind = \"hessian-free\"",
            "weight_decay",
        ],
    );
    assert_error(
        load("[optimizer]\nkind = \"adam\"\nmomentum = 0.9\n"),
        &["optimizer.momentum", "setting of sgd", "beta2"],
    );
    assert_error(
        load("[optimizer]\nkind = \"adamw\"\nlearning_rate = 0.1\n"),
        &[
            "optimizer.learning_rate",
            "unknown setting",
            "beta1, beta2, eps, lr",
        ],
    );
    assert_error(
        load("[optimizer]\nkind = \"newton\"\n"),
        &[
            "optimizer.kind",
            "newton",
            "sgd, adam, adamw, hessian-free, kfac",
        ],
    );
    // Without `kind`, SGD (as before the settings were split).
    let config = load("[optimizer]\nlr = 0.3\n").unwrap();
    assert_eq!(config.optimizer.lr(), Some(0.3));
    assert_eq!(config.optimizer.name(), "sgd");
}

/// Every registered optimizer's default settings write to a config and read back as the same
/// optimizer, and its keys (what the error messages and checkpoint migration use) are what
/// its settings serialise.
#[test]
fn each_registered_optimizer_round_trips_through_a_config() {
    let entries = hftrain::optim::registry::entries();
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind).collect();
    for kind in ["sgd", "adam", "adamw", "hessian-free", "kfac"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    for entry in entries {
        let optimizer = hftrain::config::OptimizerConfig::default_of(entry.kind).unwrap();
        let value = serde_json::to_value(&optimizer).unwrap();
        let mut keys: Vec<String> = value
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "kind")
            .cloned()
            .collect();
        keys.sort();
        let mut listed = hftrain::optim::keys_of(entry.kind).unwrap();
        listed.sort();
        assert_eq!(keys, listed, "{optimizer}");
        assert_eq!(value["kind"], optimizer.name());
        // What a config writes reads back as the same optimizer.
        let mut config = Config::parse("").unwrap();
        config.optimizer = optimizer.clone();
        assert_eq!(
            Config::parse(&config.to_toml()).unwrap().optimizer,
            optimizer
        );
    }
}

/// User-facing names are spelled as a config spells them.
#[test]
fn names_in_reports_are_the_configs_spelling() {
    use hftrain::config::{AdamConfig, OptimizerConfig, ScheduleKind};
    assert_eq!(
        OptimizerConfig::new(hftrain::optim::adam::AdamwConfig(AdamConfig::default())).to_string(),
        "adamw"
    );
    assert_eq!(ScheduleKind::OneCycle.to_string(), "one-cycle");
    assert_eq!(
        hftrain::config::CurvatureKind::GaussNewton.to_string(),
        "gauss-newton"
    );
    assert_eq!(
        hftrain::config::DeviceChoice::WgpuCpu.to_string(),
        "wgpu-cpu"
    );
    let config = Config::parse(
        "[optimizer]\nkind = \"adamw\"\nlr = 0.01\n[schedule]\nkind = \"one-cycle\"\n",
    )
    .unwrap();
    let report = hftrain::report::markdown::render(
        &config,
        &hftrain::report::markdown::RunFacts {
            device: "cpu",
            model: "model",
            data: "data",
            step_log: false,
        },
        &[],
    );
    assert!(
        report.contains("adamw (peak lr 0.01, one-cycle schedule"),
        "{report}"
    );
}

/// Values the settings' types cannot hold are named by key, and NaN or infinity reach the
/// range checks (they are numbers TOML can write).
#[test]
fn optimizer_values_of_the_wrong_type_or_range_are_named() {
    assert_error(
        load("[optimizer]\nkind = \"sgd\"\nlr = \"ten\"\n"),
        &["optimizer.lr = \"ten\"", "f64"],
    );
    assert_error(
        load("[optimizer]\nkind = \"sgd\"\nlr = nan\n"),
        &["optimizer.lr = NaN", "positive"],
    );
    assert_error(
        load("[optimizer]\nkind = \"adam\"\nweight_decay = inf\n"),
        &["optimizer.weight_decay = inf", "zero or a positive number"],
    );
    assert_error(
        load(
            "[optimizer]\nkind = \"hessian-free\"\n[optimizer.hessian_free]\ncg_max_iterations = 1.5\n",
        ),
        &["optimizer.hessian_free", "cg_max_iterations"],
    );
}

/// A run's `config.toml` written by an older hftrain holds every optimizer's settings; it
/// still loads (`--config runs/x/config.toml --resume latest`), with the configured
/// optimizer's own settings.
#[test]
fn an_older_runs_config_with_every_optimizers_settings_still_loads() {
    let old = "[optimizer]\nkind = \"adamw\"\nlr = 0.01\nmomentum = 0.9\nnesterov = true\n\
               weight_decay = 0.05\nbeta1 = 0.8\nbeta2 = 0.99\neps = 1e-7\n\
               [optimizer.hessian_free]\ncurvature = \"hessian\"\n";
    let config = load(old).unwrap();
    let Some(hftrain::optim::adam::AdamwConfig(adam)) = config.optimizer.settings() else {
        panic!("{:?}", config.optimizer)
    };
    assert_eq!(
        (adam.lr, adam.beta1, adam.eps, adam.weight_decay),
        (0.01, 0.8, 1e-7, 0.05)
    );
    // One foreign key alone is a mistake, not an old file.
    assert_error(
        load("[optimizer]\nkind = \"adamw\"\nmomentum = 0.9\n"),
        &["optimizer.momentum", "sgd"],
    );
}

/// A schedule scales a learning rate; Hessian-free has none, so one set for it is refused.
#[test]
fn a_schedule_for_an_optimizer_without_a_learning_rate_is_refused() {
    assert_error(
        load("[optimizer]\nkind = \"hessian-free\"\n[schedule]\nkind = \"cosine\"\n"),
        &["[schedule]", "hessian-free", "no learning rate"],
    );
    load("[optimizer]\nkind = \"sgd\"\n[schedule]\nkind = \"cosine\"\n").unwrap();
}

//! Networks as configs write them: the layer lines, the stages and residual blocks, the
//! shipped configs' networks (parameter counts worked out by hand from the architectures),
//! and the messages for what is wrong.

use hftrain::config::{Config, ModelConfig, StageConfig};
use hftrain::model::Network;
use hftrain::model::spec::LayerSpec;

use crate::common::{assert_error, assert_succeeded};

fn network_of(path: &str) -> Network {
    let config = Config::load(std::path::Path::new(path)).unwrap();
    config.validate().unwrap();
    Network::new(&config.model, 10).unwrap()
}

fn build(stages: Vec<StageConfig>) -> Result<Network, String> {
    Network::new(
        &ModelConfig {
            stages,
            logit_scale: 1.0,
        },
        10,
    )
}

#[test]
fn the_classic_small_cnn_has_its_122570_parameters() {
    let network = network_of("configs/cifar10-small-sgd.toml");
    // conv 3->32 (896), conv 32->64 (18,496), conv 64->64 (36,928); 32 -> 30 -> 15 -> 13 ->
    // 6 -> 4, so flatten gives 4*4*64 = 1024 features; dense 1024->64 (65,600), 64->10 (650).
    assert_eq!(network.params.total(), 122_570);
    assert!(network.summary().contains("122,570 parameters"));
    assert!(
        network
            .summary()
            .contains("conv 3x3 3 -> 32 padding 0 (bias)")
    );
    assert!(network.buffers.entries().is_empty(), "no batch norm");
}

#[test]
fn resnet9_has_the_recipes_layers_and_names() {
    let network = network_of("configs/cifar10-resnet9-sgd.toml");
    // Convolutions without bias (batch norm follows each): 3*64*9 + 64*128*9 + 2*128*128*9 +
    // 128*256*9 + 256*512*9 + 2*512*512*9 = 6,563,520; batch norm scale and shift 2 * (64 +
    // 3*128 + 256 + 3*512) = 4,480; classifier 512*10 + 10 = 5,130.
    assert_eq!(network.params.total(), 6_563_520 + 4_480 + 5_130);
    let names: Vec<&str> = network
        .params
        .entries()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    for name in [
        "stages.0.layers.0.weight",
        "stages.0.layers.1.weight",
        "stages.1.residual.0.weight",
        "stages.1.residual.4.bias",
        "stages.3.residual.3.weight",
        "classifier.weight",
        "classifier.bias",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.contains("shortcut")),
        "identity shortcuts"
    );
    assert_eq!(
        network.buffers.entries()[0].name,
        "stages.0.layers.1.running_mean"
    );
}

#[test]
fn every_shipped_config_builds_its_network() {
    for entry in std::fs::read_dir("configs").unwrap() {
        let path = entry.unwrap().path();
        let network = network_of(path.to_str().unwrap());
        assert!(network.params.total() > 0, "{}", path.display());
    }
}

#[test]
fn a_residual_branch_that_changes_the_shape_gets_a_projection() {
    let network = build(vec![
        StageConfig::new(&["conv 8"]).with_residual(&["conv 16 stride=2", "relu"]),
        StageConfig::new(&["global-avg-pool"]),
    ])
    .unwrap();
    let shortcut = network
        .params
        .entries()
        .iter()
        .find(|e| e.name == "stages.0.shortcut.weight")
        .expect("a projection");
    assert_eq!(shortcut.shape, vec![16, 8, 1, 1]);
    let message = build(vec![
        StageConfig::new(&["conv 8"]).with_residual(&["conv 8 kernel=3 padding=none"]),
        StageConfig::new(&["flatten"]),
    ])
    .unwrap_err();
    assert!(
        message.contains("model.stages[0].residual") && message.contains("cannot do that"),
        "{message}"
    );
}

#[test]
fn a_wrong_layer_line_is_named_with_what_to_write() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["cnv 8", "flatten"],
            &[
                "model.stages[0].layers[0] = \"cnv 8\"",
                "unknown layer `cnv`",
                "conv, batch-norm",
            ],
        ),
        (
            &["conv 8 kernal=3", "flatten"],
            &["layers[0]", "unknown option `kernal`", "conv C [kernel=3]"],
        ),
        (
            &["conv", "flatten"],
            &[
                "conv needs its output channels",
                "\"conv <output channels>\"",
            ],
        ),
        (&["conv eight"], &["`eight`", "as a number"]),
        (
            &["conv 8 padding=half"],
            &["padding=half", "same, none or a number"],
        ),
        (&["relu 2"], &["relu takes no value"]),
        (
            &["linear 10"],
            &[
                "layers[0] = \"linear 10\"",
                "3x32x32 feature map",
                "flatten",
            ],
        ),
        (
            &["conv 8 kernel=41 padding=none"],
            &["41x41 kernel does not fit"],
        ),
        (&["conv 8 kernel=99"], &["kernel=99: expected 1 to 65"]),
        (
            &["conv 8 kernel=3 padding=3"],
            &["padding=3: expected less than the kernel"],
        ),
        (&["max-pool 0"], &["a pooling window of 0"]),
        (&["scale -1", "flatten"], &["expected a positive factor"]),
        (
            &["conv 8"],
            &["ends with a 8x32x32 feature map", "global-max-pool"],
        ),
    ];
    for (layers, needles) in cases {
        let message = build(vec![StageConfig::new(layers)]).unwrap_err();
        for needle in *needles {
            assert!(
                message.contains(needle),
                "{layers:?}: {message:?} lacks {needle:?}"
            );
        }
    }
    let message = build(vec![StageConfig::new(&[])]).unwrap_err();
    assert!(message.contains("model.stages[0] is empty"), "{message}");
}

#[test]
fn layer_lines_read_kind_value_and_options() {
    let mut spec = LayerSpec::parse("conv 64  kernel=5 bias=false").unwrap();
    assert_eq!(spec.kind, "conv");
    assert_eq!(spec.required::<usize>("channels").unwrap(), 64);
    assert_eq!(spec.number("kernel", 3usize).unwrap(), 5);
    assert!(!spec.flag("bias", true).unwrap());
    assert_eq!(spec.number("stride", 1usize).unwrap(), 1);
    spec.finish("conv C").unwrap();
    assert!(
        LayerSpec::parse("conv 8 3")
            .unwrap_err()
            .contains("key=value")
    );
    assert!(
        LayerSpec::parse("conv 8 k=1 k=2")
            .unwrap_err()
            .contains("twice")
    );
    assert!(LayerSpec::parse("  ").is_err());
}

/// A convolution drops its bias where batch norm follows (the mean subtraction cancels it),
/// unless the line says otherwise.
#[test]
fn a_convolution_before_batch_norm_has_no_bias() {
    let names = |layers: &[&str]| -> Vec<String> {
        let mut all = layers.to_vec();
        all.push("flatten");
        let network = build(vec![StageConfig::new(&all)]).unwrap();
        network
            .params
            .entries()
            .iter()
            .map(|e| e.name.clone())
            .collect()
    };
    assert!(!names(&["conv 4", "batch-norm"]).contains(&"stages.0.layers.0.bias".to_string()));
    assert!(names(&["conv 4", "relu"]).contains(&"stages.0.layers.0.bias".to_string()));
    assert!(
        names(&["conv 4 bias=true", "batch-norm"]).contains(&"stages.0.layers.0.bias".to_string())
    );
}

/// A config in the format before stages is refused with the same network in stages, which
/// builds the network the old format meant.
#[test]
fn a_config_of_the_old_format_gets_its_network_in_stages() {
    let old = "[model]\nblocks = [{ channels = 8, pool = true }, { channels = 16 }]\n\
               batch_norm = true\nhead = \"avg\"\nlogit_scale = 0.5\n";
    let message = format!("{:#}", Config::parse(old).unwrap_err());
    assert!(message.contains("replaced by `stages`"), "{message}");
    let snippet = &message[message.find("\n[model]").unwrap()..];
    let mut config = Config::parse(snippet).unwrap();
    config.name = "migrated".into();
    config.validate().unwrap();
    assert_eq!(config.model.logit_scale, 0.5);
    assert_eq!(
        config.model.stages,
        vec![
            StageConfig::new(&["conv 8", "batch-norm", "relu", "max-pool"]),
            StageConfig::new(&["conv 16", "batch-norm", "relu"]),
            StageConfig::new(&["global-avg-pool"]),
        ]
    );
    let _ = assert_error(Config::parse(old), &["[[model.stages]]"]);
}

/// `(kind, name, shape)` of every parameter and buffer as `scripts/torch_reference.py`
/// plans the network of `config` (its PyTorch model is built from the same plan).
pub fn torch_reference_parameters(config: &std::path::Path) -> Vec<(String, String, Vec<usize>)> {
    let out = std::process::Command::new("python3")
        .args([
            "scripts/torch_reference.py",
            "--list-parameters",
            "--config",
        ])
        .arg(config)
        .output()
        .expect("python3 runs (the PyTorch reference script is part of the project)");
    assert_succeeded(&out);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.split(' ').collect();
            let shape = parts[2].split('x').map(|d| d.parse().unwrap()).collect();
            (parts[0].to_string(), parts[1].to_string(), shape)
        })
        .collect()
}

/// hftrain's layout as the same rows.
pub fn layout_rows(network: &Network) -> Vec<(String, String, Vec<usize>)> {
    let rows = |kind: &str, layout: &hftrain::params::Layout| -> Vec<_> {
        layout
            .entries()
            .iter()
            .map(|e| (kind.to_string(), e.name.clone(), e.shape.clone()))
            .collect()
    };
    let mut all = rows("param", &network.params);
    all.extend(rows("buffer", &network.buffers));
    all
}

/// The PyTorch reference builds the network of every shipped config, and of one with every
/// layer kind and a projected residual block, with hftrain's names and shapes.
#[test]
fn the_pytorch_reference_builds_the_same_network_from_the_same_config() {
    let dir = crate::common::TempDir::new();
    let every_kind = dir.path().join("every-kind.toml");
    std::fs::write(
        &every_kind,
        "[model]\nlogit_scale = 0.5\n\
         [[model.stages]]\n\
         layers = [\"conv 8 kernel=5 padding=2 stride=2\", \"batch-norm\", \"gelu\", \"avg-pool\"]\n\
         residual = [\"conv 16 stride=2\", \"relu\", \"conv 16 bias=false\"]\n\
         [[model.stages]]\n\
         layers = [\"conv 10 padding=none\", \"max-pool\", \"flatten\", \"linear 12 bias=false\", \"relu\", \"scale 2\"]\n",
    )
    .unwrap();
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir("configs")
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.push(every_kind);
    for path in paths {
        let mut config = Config::load(&path).unwrap();
        config.name = "x".into();
        config.validate().unwrap();
        let network = Network::new(&config.model, 10).unwrap();
        assert_eq!(
            torch_reference_parameters(&path),
            layout_rows(&network),
            "{}",
            path.display()
        );
    }
}

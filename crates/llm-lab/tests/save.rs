//! `Model::save_gguf` writes a file `Model::load` reads back as the same model: the same config,
//! tokenizer, tensors and logits, from a GGUF file or a Hugging Face folder, for both
//! architectures; a failed write leaves nothing behind.

use candle_core::quantized::GgmlDType;
use llm_lab::model::WeightFormat;
use llm_lab::testing::{tiny_model, write_tiny_hf_folder, TinySpec};
use llm_lab::{Config, Model};

fn logits(m: &Model) -> Vec<Vec<f32>> {
    let tokens = m.encode("the cat sat on the mat").unwrap();
    m.run(&tokens).unwrap().to_vec2::<f32>().unwrap()
}

/// The config with its name (the file's stem) left out.
fn shape_of(c: &Config) -> Config {
    Config {
        name: String::new(),
        ..c.clone()
    }
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn a_saved_model_loads_back_as_the_same_model() {
    let specs = [
        TinySpec::default(),
        TinySpec {
            untied_output: true,
            ..TinySpec::default()
        },
        TinySpec::gemma(),
    ];
    for spec in specs {
        let (dir, mut model) = tiny_model(&spec).unwrap();
        // A model is named after its file: the name it will have when loaded back.
        model.config.name = "saved".into();
        let path = dir.path().join("saved.gguf");
        model.save_gguf(&path).unwrap();
        let back = Model::load(&path).unwrap();
        let a = spec.architecture;
        assert_eq!(back.config, model.config, "{a}");
        assert_eq!(
            back.weight_shapes().iter().count(),
            model.weight_shapes().iter().count()
        );
        assert_eq!(logits(&back), logits(&model), "{a}");
        let text = "the cat, the hat\n\nthe end";
        assert_eq!(
            back.encode(text).unwrap(),
            model.encode(text).unwrap(),
            "{a}"
        );
        // Saved again (under the same file name, which names the model), the file is byte for
        // byte the same: nothing drifts through a round trip.
        let other = tempfile::tempdir().unwrap();
        let again = other.path().join("saved.gguf");
        back.save_gguf(&again).unwrap();
        let (x, y) = (
            std::fs::read(&path).unwrap(),
            std::fs::read(&again).unwrap(),
        );
        assert!(x == y, "{a}: the second save differs from the first");
    }
}

#[test]
fn a_quantized_model_is_saved_with_its_dequantized_numbers() {
    let spec = TinySpec {
        format: GgmlDType::Q4_1,
        embed_format: GgmlDType::Q8_0,
        ..TinySpec::default()
    };
    let (dir, model) = tiny_model(&spec).unwrap();
    let path = dir.path().join("saved.gguf");
    model.save_gguf(&path).unwrap();
    let exact = Model::load_with(dir.path().join("tiny.gguf"), WeightFormat::F32).unwrap();
    let back = Model::load(&path).unwrap();
    assert_eq!(logits(&back), logits(&exact));
    assert!(back.to_string().contains("[F32]") && !back.to_string().contains("[Q4_1]"));
}

#[test]
fn a_hugging_face_model_is_saved_with_gguf_s_pairing_of_q_and_k() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec::default();
    write_tiny_hf_folder(&dir.path().join("hf"), &spec).unwrap();
    let hf = Model::load(dir.path().join("hf")).unwrap();
    let path = dir.path().join("from_hf.gguf");
    hf.save_gguf(&path).unwrap();
    let back = Model::load(&path).unwrap();
    assert_eq!(shape_of(&back.config).n_layers, hf.config.n_layers);
    // Rotations in the other pairing round differently, so equal up to f32 noise.
    let d = max_diff(&logits(&back), &logits(&hf));
    assert!(d < 1e-4, "{d}");
    // The tiny GGUF of the same spec is the same model, and its file pairs Q/K the same way.
    let (_d, gguf) = tiny_model(&spec).unwrap();
    assert!(max_diff(&logits(&back), &logits(&gguf)) < 1e-4);
}

#[test]
fn llama_3_scaling_is_saved_as_gguf_s_frequency_factors() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, mut model) = tiny_model(&TinySpec::default()).unwrap();
    model.config.rope_scaling = Config::llama_3_2_1b().rope_scaling;
    let path = dir.path().join("scaled.gguf");
    model.save_gguf(&path).unwrap();
    let back = Model::load(&path).unwrap();
    let (a, b) = (back.config.rope_inv_freqs(), model.config.rope_inv_freqs());
    assert!(a
        .iter()
        .zip(&b)
        .all(|(x, y)| (x - y).abs() <= 1e-6 * y.abs()));
    assert_eq!(logits(&back).len(), logits(&model).len());
}

#[test]
fn a_failed_save_leaves_no_file_behind() {
    let (dir, model) = tiny_model(&TinySpec::default()).unwrap();
    let before: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    // The destination is a folder: the rename fails after the data was written beside it.
    let target = dir.path().join("a_folder");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("x"), "x").unwrap();
    let err = model.save_gguf(&target).unwrap_err().to_string();
    assert!(err.contains("a_folder"), "{err}");
    let after: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(
        after.len(),
        before.len() + 1,
        "only the folder itself is new"
    );
    // A folder that does not exist is named too.
    let err = model
        .save_gguf(dir.path().join("no/such/dir/m.gguf"))
        .unwrap_err();
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

/// The course's real models, saved and loaded back, give the logits of their f32 reading.
#[test]
fn the_course_s_models_survive_a_round_trip() {
    let mut paths = vec![llm_lab::models::fetch(llm_lab::models::DEFAULT_MODEL).unwrap()];
    paths.extend(llm_lab::testing::real_gemma(
        "the_course_s_models_survive_a_round_trip",
    ));
    for path in paths {
        let exact = Model::load_with(&path, WeightFormat::F32).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let saved = dir.path().join("saved.gguf");
        exact.save_gguf(&saved).unwrap();
        let back = Model::load(&saved).unwrap();
        assert_eq!(logits(&back), logits(&exact), "{}", path.display());
        assert_eq!(back.n_params(), exact.n_params());
    }
}

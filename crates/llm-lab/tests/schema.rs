//! Every tensor of each architecture's table (`model::schema`) reaches the five places that know
//! a model's tensors: the tiny-model writer, the loaders (GGUF and Hugging Face), the shape
//! checks, `WeightShapes` and the printed module tree. The test walks the table, so an entry
//! added to it is tested in all five without a line changed here.

use std::collections::HashMap;

use llm_lab::candle_core::quantized::{GgmlDType, QTensor};
use llm_lab::candle_core::{DType, Device, Tensor};
use llm_lab::model::schema::{self, Kind};
use llm_lab::model::WeightShapes;
use llm_lab::testing::{rewrite_gguf, write_tiny_gguf, write_tiny_hf_folder, TinySpec};
use llm_lab::Model;

/// The tiny models, with their own output matrix so that the optional entry is there too.
fn specs() -> [TinySpec; 2] {
    [
        TinySpec {
            untied_output: true,
            ..TinySpec::default()
        },
        TinySpec {
            untied_output: true,
            ..TinySpec::gemma()
        },
    ]
}

/// `want` with its last dimension one too large (the embeddings' first dimension is the
/// vocabulary, which the file defines rather than contradicts).
fn wrong(want: &[usize]) -> Vec<usize> {
    let mut v = want.to_vec();
    *v.last_mut().unwrap() += 1;
    v
}

#[test]
fn every_tensor_of_the_table_is_written_loaded_listed_printed_and_shape_checked() {
    for spec in specs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        write_tiny_gguf(&path, &spec).unwrap();
        let model = Model::load(&path).unwrap();
        let c = &model.config;
        let in_file = WeightShapes::read_gguf(&path).unwrap();
        let loaded = model.weight_shapes();
        let from_config = WeightShapes::from_config(c);
        let tree = format!("{model}");
        let table = schema::tensors(c.architecture);
        let mut listed = 0;
        for t in table {
            let want = t.shape(c);
            for l in t.layers(c.n_layers) {
                let name = t.gguf_name(l);
                let (a, w) = (c.architecture, Some(&want[..]));
                assert_eq!(in_file.get(&name), w, "{a}: the writer's {name}");
                assert_eq!(loaded.get(&name), w, "{a}: the loaded {name}");
                assert_eq!(from_config.get(&name), w, "{a}: WeightShapes' {name}");
                listed += 1;
            }
            let leaf = t.module().rsplit('.').next().unwrap();
            let line = match t.kind {
                Kind::Matrix => format!(
                    "({leaf}): Linear(in_features={}, out_features={}",
                    want[1], want[0]
                ),
                Kind::Gain => format!("({leaf}): {}RMSNorm(({},)", prefix(c), want[0]),
            };
            if t.slot != schema::Slot::Embed {
                assert!(
                    tree.contains(&line),
                    "{}: no `{line}` in\n{tree}",
                    c.architecture
                );
            }

            // The shape check refuses this tensor, by name, when its shape is wrong.
            let name = t.gguf_name(t.layers(c.n_layers).last().copied().unwrap());
            let bad = dir.path().join("bad.gguf");
            rewrite_gguf(&path, &bad, |_, tensors| {
                let x = tensors.iter_mut().find(|(n, _)| *n == name).unwrap();
                let zeros = Tensor::zeros(wrong(&want), DType::F32, &Device::Cpu).unwrap();
                x.1 = QTensor::quantize(&zeros, GgmlDType::F32).unwrap();
            })
            .unwrap();
            let err = Model::load(&bad).unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{name}` of shape {:?}", wrong(&want))),
                "{}: {err}",
                c.architecture
            );
        }
        // Nothing loaded or listed that the table does not name.
        assert_eq!(loaded.len(), listed);
        assert_eq!(from_config.len(), listed);
        assert_eq!(in_file.len(), listed);
    }
}

fn prefix(c: &llm_lab::Config) -> &'static str {
    match c.architecture {
        llm_lab::model::Architecture::Llama => "Llama",
        llm_lab::model::Architecture::Gemma3 => "Gemma3",
    }
}

#[test]
fn the_hugging_face_loader_reads_and_checks_every_tensor_of_the_llama_table() {
    let spec = &specs()[0];
    let dir = tempfile::tempdir().unwrap();
    write_tiny_hf_folder(dir.path(), spec).unwrap();
    let model = Model::load(dir.path()).unwrap();
    let c = &model.config;
    assert_eq!(
        model.weight_shapes().iter().collect::<Vec<_>>(),
        WeightShapes::from_config(c).iter().collect::<Vec<_>>()
    );
    let file = dir.path().join("model.safetensors");
    let original = llm_lab::candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    for t in schema::tensors(c.architecture) {
        let name = t.hf_name(t.layers(c.n_layers).last().copied().unwrap());
        let want = t.shape(c);
        let mut st: HashMap<String, Tensor> = original.clone();
        let zeros = Tensor::zeros(wrong(&want), DType::F32, &Device::Cpu).unwrap();
        assert!(
            st.insert(name.clone(), zeros).is_some(),
            "no {name} written"
        );
        llm_lab::candle_core::safetensors::save(&st, &file).unwrap();
        let err = Model::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("`{name}` of shape")), "{err}");
    }
}

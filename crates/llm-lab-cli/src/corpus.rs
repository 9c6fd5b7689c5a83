//! `llm-lab corpus`: the Portuguese stories the training lesson learns from, written by the
//! course's own Gemma 3 270M. Each story starts from one of the openings below (in the spirit of
//! the lecture's "Certa vez, ele resolveu que não seria…"), continued by the course's sampler with
//! a seed of its own; it is cleaned (markup removed, cut at its first blank line or heading and at
//! its last full sentence), kept only if it reads as Portuguese prose that does not loop, and
//! de-duplicated. The same command on the same model file gives the same stories.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use llm_lab::generate::GenerateOptions;
use llm_lab::sampling::SamplerConfig;
use llm_lab::Model;
use llm_lab_shared::args::CorpusArgs;

/// How each story is sampled.
pub const TEMPERATURE: f32 = 0.8;
pub const TOP_P: f32 = 0.95;
pub const MAX_NEW_TOKENS: usize = 160;
/// Every 10th story (the 10th, 20th, …) goes to the validation file.
const VALIDATION_EVERY: usize = 10;

/// The openings, taken in turn; story `i` starts with opening `i % len` and is sampled with
/// seed `i`.
pub const OPENINGS: &[&str] = &[
    // The lecture's own example sentence, kept as it is.
    "Certa vez, ele resolveu que não seria",
    "Era uma vez uma menina que morava perto do rio e",
    "Naquela manhã de inverno, o velho pescador",
    "Quando a chuva finalmente parou, as crianças",
    "O gato da vizinha tinha um segredo:",
    "Ninguém na vila sabia por que o relógio da praça",
    "Minha avó sempre dizia que",
    "No primeiro dia de aula, Joana percebeu que",
    "O trem atrasou três horas, e por isso",
    "Depois de muitos anos longe de casa, Pedro voltou e",
    "A padaria da esquina abria antes do sol, e o padeiro",
    "No meio da noite, um barulho estranho veio do quintal, e",
    "O menino guardava numa caixa de sapatos",
    "Todos os sábados, a família se reunia para",
    "A professora escreveu uma única palavra no quadro:",
    "Perdido na floresta, o cachorro",
    "Era o último dia do verão quando",
    "O carteiro trazia sempre as mesmas cartas, até que um dia",
    "Na feira de domingo, entre as bancas de frutas,",
    "A velha casa no alto do morro estava vazia havia anos, mas",
    "Lúcia decidiu aprender a tocar violão porque",
    "O pequeno barco saiu do porto ao amanhecer e",
    "Certa vez, um rei muito vaidoso mandou que",
    "Quando a luz acabou na cidade inteira,",
    "O jardineiro plantou uma semente diferente e",
    "Marina abriu a janela e viu que a rua",
    "Meu irmão mais novo jurava que tinha visto",
    "No fundo da gaveta, havia uma fotografia antiga:",
    "O circo chegou à cidade numa terça-feira, e",
    "Foi numa tarde quente de janeiro que",
    "Enquanto consertava sapatos, o velho sapateiro ouvia as histórias dos fregueses, e",
    "A biblioteca fechava às seis, mas naquele dia",
    "Os dois amigos apostaram para ver quem chegaria primeiro ao topo da serra, e",
    "Ninguém acreditou quando a galinha",
    "Depois da tempestade, a praia amanheceu coberta de",
    "O médico da vila atendia a todos, mesmo quando",
    "Um dia, sem avisar ninguém, o papagaio",
    "A menina escreveu uma carta para a lua e",
    "Na cozinha da fazenda, o cheiro de café",
    "Ele tinha medo do escuro, até a noite em que",
];

/// Words that make up a large share of any Portuguese prose.
const PORTUGUESE: &[&str] = &[
    "a", "o", "e", "de", "do", "da", "que", "em", "um", "uma", "para", "com", "não", "os", "as",
    "no", "na", "se", "por", "mais", "dos", "das", "como", "mas", "foi", "ao", "ele", "ela", "seu",
    "sua", "era", "quando", "muito", "já", "também", "só", "pelo", "pela", "até", "isso", "depois",
    "sem", "mesmo", "tinha", "havia", "nos", "nas", "eu", "me", "lhe", "todos", "sempre",
];

/// Markup and noise removed, cut at the first blank line or heading, trimmed to its last full
/// sentence. `None` when nothing of a sentence is left.
pub fn clean(text: &str) -> Option<String> {
    // Cut at the first blank line or heading: the base model drifts into web text there.
    let mut cut = text.len();
    for mark in ["\n\n", "\n#", "<h", "<H", "\n---", "\n**"] {
        if let Some(i) = text.find(mark) {
            cut = cut.min(i);
        }
    }
    let text = &text[..cut];
    // Strip any remaining tags.
    let mut plain = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => plain.push(c),
            _ => {}
        }
    }
    let words: Vec<&str> = plain.split_whitespace().collect();
    let joined = words.join(" ").replace(['*', '#', '_'], "");
    let end = joined.rfind(['.', '!', '?'])?;
    let story = joined[..=end].trim().to_string();
    (story.len() >= 80).then_some(story)
}

/// Why a cleaned story is not kept, if it is not.
pub fn rejected(story: &str) -> Option<&'static str> {
    let words: Vec<String> = story
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.len() < 20 {
        return Some("too short");
    }
    let common = words
        .iter()
        .filter(|w| PORTUGUESE.contains(&w.as_str()))
        .count();
    if (common as f64) < 0.25 * words.len() as f64 {
        return Some("not Portuguese prose");
    }
    let foreign = story
        .chars()
        .filter(|c| !(c.is_alphanumeric() || c.is_whitespace() || ".,;:!?-—–'\"()«»…".contains(*c)))
        .count();
    let non_latin = story
        .chars()
        .filter(|c| c.is_alphabetic() && (*c as u32) > 0x24F)
        .count();
    if foreign + non_latin > story.chars().count() / 50 {
        return Some("symbols or another script");
    }
    // A loop: few distinct words, or a run of four words that comes back three times.
    let distinct: HashSet<&String> = words.iter().collect();
    if (distinct.len() as f64) < 0.35 * words.len() as f64 {
        return Some("loops");
    }
    let mut seen: std::collections::HashMap<&[String], usize> = std::collections::HashMap::new();
    for w in words.windows(4) {
        let n = seen.entry(w).or_insert(0);
        *n += 1;
        if *n >= 3 {
            return Some("loops");
        }
    }
    None
}

/// Story `i`: its opening continued with seed `i`, cleaned; `None` when nothing is kept.
pub fn story(model: &Model, i: usize) -> Result<Option<String>> {
    let opening = OPENINGS[i % OPENINGS.len()];
    let options = GenerateOptions {
        max_new_tokens: MAX_NEW_TOKENS,
        sampler: SamplerConfig {
            temperature: TEMPERATURE,
            top_p: Some(TOP_P),
            seed: i as u64,
            ..SamplerConfig::default()
        },
        stop_strings: vec!["\n\n".into()],
        ..Default::default()
    };
    let out = model.generate(opening, options)?;
    Ok(clean(&format!("{opening}{}", out.text)))
}

pub fn corpus(args: &CorpusArgs) -> Result<()> {
    let path = llm_lab::models::fetch(&args.model)
        .or_else(|_| -> Result<_> { Ok(std::path::PathBuf::from(&args.model)) })?;
    let model = Model::load(&path).with_context(|| format!("cannot load {}", path.display()))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let target = args.target_kb * 1000;
    let (mut kept, mut seen, mut size) = (Vec::new(), HashSet::new(), 0usize);
    let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
    let start = Instant::now();
    let mut i = 0;
    while size < target && args.first.is_none_or(|n| kept.len() < n) {
        if i >= args.max_stories {
            bail!(
                "{i} stories sampled and only {} KB kept; raise --max-stories or lower --target-kb",
                size / 1000
            );
        }
        match story(&model, i)? {
            None => *reasons.entry("no full sentence").or_default() += 1,
            Some(s) => match rejected(&s) {
                Some(why) => *reasons.entry(why).or_default() += 1,
                None if !seen.insert(s.chars().take(80).collect::<String>()) => {
                    *reasons.entry("duplicate").or_default() += 1
                }
                None => {
                    size += s.len() + 2;
                    kept.push(s);
                }
            },
        }
        i += 1;
        if i % 20 == 0 {
            eprintln!(
                "  {i} sampled, {} kept, {} KB, {:.0} s",
                kept.len(),
                size / 1000,
                start.elapsed().as_secs_f64()
            );
        }
    }
    let (mut train, mut valid) = (String::new(), String::new());
    for (k, s) in kept.iter().enumerate() {
        let file = if (k + 1) % VALIDATION_EVERY == 0 {
            &mut valid
        } else {
            &mut train
        };
        file.push_str(s);
        file.push_str("\n\n");
    }
    write_atomically(&args.out.join("treino.txt"), &train)?;
    write_atomically(&args.out.join("validacao.txt"), &valid)?;
    if args.first.is_none() {
        let mut p = String::new();
        writeln!(p, "# Corpus: histórias curtas em português")?;
        writeln!(p)?;
        writeln!(
            p,
            "Written by Gemma 3 270M (`{}`) with `cargo xtask corpus` (llm-lab's sampler).",
            path.file_name().unwrap_or_default().to_string_lossy()
        )?;
        writeln!(p)?;
        writeln!(p, "- Story `i` (from 0) starts with opening `i mod {}` of `OPENINGS` in `crates/llm-lab-cli/src/corpus.rs`, continued with temperature {TEMPERATURE}, top-p {TOP_P}, seed `i`, at most {MAX_NEW_TOKENS} new tokens, stopping at a blank line.", OPENINGS.len())?;
        writeln!(p, "- Cleaned: markup removed, cut at the first blank line or heading and after the last full sentence. Kept when at least a quarter of its words are common Portuguese words, it has no run of four words three times and few symbols; de-duplicated by its first 80 characters.")?;
        writeln!(
            p,
            "- {i} stories sampled, {} kept ({} KB); dropped: {}.",
            kept.len(),
            size / 1000,
            reasons
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(p, "- Split: every {VALIDATION_EVERY}th kept story is in `validacao.txt`, the others in `treino.txt`, one story per paragraph.")?;
        writeln!(p)?;
        writeln!(p, "The stories are output of Gemma 3 270M, used under the Gemma Terms of Use (see `GEMMA_NOTICE.md`).")?;
        write_atomically(&args.out.join("PROVENANCE.md"), &p)?;
        let notice = path.with_file_name("gemma-3-270m.NOTICE.md");
        if let Ok(text) = std::fs::read_to_string(&notice) {
            write_atomically(&args.out.join("GEMMA_NOTICE.md"), &text)?;
        }
    }
    eprintln!(
        "{} stories kept of {i} ({} KB) in {:.0} s, in {}",
        kept.len(),
        size / 1000,
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// Writes `text` beside `path` and renames it into place: never a half-written file.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_cuts_at_web_text_and_keeps_whole_sentences() {
        let raw = "Certa vez, ele resolveu que não seria mais o mesmo. Saiu de casa cedo e foi \
                   até o rio, onde <b>encontrou</b> um velho amigo. Conversaram\n\n<h2>Leia também";
        let s = clean(raw).unwrap();
        assert!(s.ends_with("velho amigo."), "{s}");
        assert!(!s.contains('<') && !s.contains("Leia"), "{s}");
        assert_eq!(clean("sem ponto final nenhum aqui"), None);
    }

    #[test]
    fn loops_and_other_languages_are_rejected() {
        let good = "Era uma vez uma menina que morava perto do rio e todos os dias ia até a \
                    margem ver os barcos. Um dia, viu um barco diferente, com velas azuis, e \
                    decidiu que queria saber de onde ele vinha.";
        assert_eq!(rejected(good), None);
        let english = "Once upon a time there was a girl who lived near the river and every day \
                       she went to the bank to watch the boats go by in the morning light.";
        assert_eq!(rejected(english), Some("not Portuguese prose"));
        let looping = "O menino disse que não ia. O menino disse que não ia. O menino disse que \
                       não ia. O menino disse que não ia e a mãe ficou triste com ele.";
        assert_eq!(rejected(looping), Some("loops"));
        let symbols = "O menino disse que não ia para a escola de novo e a mãe da menina ficou \
                       triste com ele e com ela: {{}} [[]] $$ %% && ## @@ ~~ ^^ || {{}} [[]] $$.";
        assert_eq!(rejected(symbols), Some("symbols or another script"));
    }
}

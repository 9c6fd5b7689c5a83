//! SentencePiece tokenization as llama.cpp performs it for GGUF files whose
//! `tokenizer.ggml.model` is `llama` (Gemma, Llama 1/2, Mistral): pieces with scores, spaces
//! written `▁`, and bytes `<0xXX>` for whatever no piece covers.
//!
//! Written here instead of built with the `tokenizers` crate, because the GGUF keeps only each
//! piece's score, and llama.cpp's algorithm is defined on scores: start from single characters,
//! repeatedly merge the adjacent pair whose concatenation is the vocabulary piece with the
//! highest score (leftmost pair on a tie), and spell any left-over symbol that is not a piece as
//! byte tokens. `tokenizers`' BPE needs a ranked merge list instead (which would have to be
//! reconstructed from 262,144 scores, with its own tie rules) and its Unigram model finds the
//! most probable segmentation, a different answer on some words. Following the algorithm itself
//! gives llama.cpp's ids by construction; `tests/gemma_tokenizer.rs` checks them against ids
//! recorded from llama.cpp.
//!
//! Special tokens follow llama.cpp's `parse_special = true` (what `llama-tokenize` and
//! `llama-completion` use): before any merging, the text is cut at every occurrence of a
//! control, user-defined or unknown piece, longest pieces first, and each occurrence becomes that
//! token. So `<start_of_turn>` (control) and `\n\n` (user-defined, on Gemma) in a text are single
//! tokens, while `<0x41>` (a byte token) is ordinary text.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// What a vocabulary entry is, as GGUF's `tokenizer.ggml.token_type` says (SentencePiece's types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An ordinary piece of text (type 1).
    Normal,
    /// The unknown token (type 2).
    Unknown,
    /// A control token such as `<bos>` or `<start_of_turn>` (type 3).
    Control,
    /// A piece the model's authors added, always matched whole, such as Gemma's `\n\n` (type 4).
    UserDefined,
    /// A reserved, never-produced entry (type 5).
    Unused,
    /// One raw byte, `<0xXX>` (type 6).
    Byte,
}

impl TokenKind {
    /// GGUF's code for the type; `None` for a code no converter writes.
    pub fn from_gguf(code: i64) -> Option<Self> {
        Some(match code {
            // 0 is "undefined": files converted without types treat every piece as text.
            0 | 1 => TokenKind::Normal,
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => return None,
        })
    }

    /// Whether the piece is cut out of the text whole before merging.
    fn is_special(self) -> bool {
        matches!(
            self,
            TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown
        )
    }
}

/// A SentencePiece vocabulary and llama.cpp's way of using it.
#[derive(Debug)]
pub struct Spm {
    pieces: Vec<String>,
    scores: Vec<f32>,
    kinds: Vec<TokenKind>,
    ids: HashMap<String, u32>,
    byte_ids: [Option<u32>; 256],
    /// Control, user-defined and unknown tokens, longest piece first.
    specials: Vec<u32>,
    add_space_prefix: bool,
    unknown: Option<u32>,
}

/// A part of the text after the special tokens were cut out.
enum Fragment {
    Text(usize, usize),
    Token(u32),
}

/// One symbol of the text being merged: a byte range, linked to its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of two adjacent symbols into the piece `left ++ right`.
#[derive(PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    /// The highest score first; on a tie, the leftmost pair (llama.cpp's order).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Spm {
    /// A vocabulary from its pieces, scores and kinds (three lists of one length).
    /// `unknown` is the token for a byte that has no `<0xXX>` piece.
    pub fn new(
        pieces: Vec<String>,
        scores: Vec<f32>,
        kinds: Vec<TokenKind>,
        add_space_prefix: bool,
        unknown: Option<u32>,
    ) -> std::result::Result<Self, String> {
        let n = pieces.len();
        if scores.len() != n || kinds.len() != n {
            return Err(format!(
                "has {n} tokens but {} scores and {} token types",
                scores.len(),
                kinds.len()
            ));
        }
        if n == 0 || u32::try_from(n).is_err() {
            return Err(format!("has an unusable vocabulary of {n} tokens"));
        }
        // llama.cpp names empty pieces so that they can never match text.
        let pieces: Vec<String> = pieces
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                if p.is_empty() {
                    format!("[EMPTY_{i}]")
                } else {
                    p
                }
            })
            .collect();
        let mut ids = HashMap::with_capacity(n);
        for (i, p) in pieces.iter().enumerate() {
            // A later duplicate wins, as in llama.cpp's map.
            ids.insert(p.clone(), i as u32);
        }
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = ids.get(&format!("<0x{b:02X}>")).copied().or_else(|| {
                // llama.cpp's fallback: the byte itself as a piece (ASCII only can be one).
                char::from_u32(b as u32)
                    .filter(|c| c.is_ascii())
                    .and_then(|c| ids.get(&c.to_string()).copied())
            });
        }
        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| kinds[i as usize].is_special())
            .collect();
        specials.sort_by_key(|&i| std::cmp::Reverse(pieces[i as usize].len()));
        Ok(Spm {
            pieces,
            scores,
            kinds,
            ids,
            byte_ids,
            specials,
            add_space_prefix,
            unknown,
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Whether the vocabulary is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The stored piece of `id` (`▁` for spaces, `<0x0A>` for a byte).
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    /// The id of the exact piece `piece`.
    pub fn id(&self, piece: &str) -> Option<u32> {
        self.ids.get(piece).copied()
    }

    /// The kind of `id`.
    pub fn kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// Token ids of `text` (no BOS; the model adds it).
    pub fn encode(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        let mut out = Vec::new();
        // llama.cpp prefixes a space to text that starts the input or follows a special token.
        let mut after_special = true;
        for fragment in self.cut_specials(text) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    after_special = true;
                }
                Fragment::Text(start, end) => {
                    let mut t = String::with_capacity(end - start + 1);
                    if self.add_space_prefix && after_special {
                        t.push(' ');
                    }
                    t.push_str(&text[start..end]);
                    self.merge(&t.replace(' ', "\u{2581}"), &mut out)?;
                    after_special = false;
                }
            }
        }
        Ok(out)
    }

    /// Splits `text` at every occurrence of a special piece, longest pieces first.
    fn cut_specials(&self, text: &str) -> Vec<Fragment> {
        let mut fragments = if text.is_empty() {
            vec![]
        } else {
            vec![Fragment::Text(0, text.len())]
        };
        for &id in &self.specials {
            let piece = &self.pieces[id as usize];
            if !text.contains(piece.as_str()) {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for f in fragments {
                let Fragment::Text(mut start, end) = f else {
                    next.push(f);
                    continue;
                };
                // A valid UTF-8 needle only matches at character boundaries.
                while let Some(at) = text[start..end].find(piece.as_str()) {
                    if at > 0 {
                        next.push(Fragment::Text(start, start + at));
                    }
                    next.push(Fragment::Token(id));
                    start += at + piece.len();
                }
                if start < end {
                    next.push(Fragment::Text(start, end));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// llama.cpp's SentencePiece merge loop on one escaped fragment.
    fn merge(&self, text: &str, out: &mut Vec<u32>) -> std::result::Result<(), String> {
        let mut symbols: Vec<Symbol> = text
            .char_indices()
            .map(|(start, c)| Symbol {
                start,
                len: c.len_utf8(),
                prev: None,
                next: None,
            })
            .collect();
        let n = symbols.len();
        for (i, s) in symbols.iter_mut().enumerate() {
            s.prev = i.checked_sub(1);
            s.next = (i + 1 < n).then_some(i + 1);
        }
        let mut queue = BinaryHeap::new();
        let candidate = |symbols: &[Symbol], left: Option<usize>, right: Option<usize>| {
            let (l, r) = (left?, right?);
            let (a, b) = (symbols[l], symbols[r]);
            let piece = &text[a.start..b.start + b.len];
            let id = *self.ids.get(piece)?;
            Some(Bigram {
                score: self.scores[id as usize],
                left: l,
                right: r,
                len: piece.len(),
            })
        };
        for i in 1..n {
            queue.extend(candidate(&symbols, Some(i - 1), Some(i)));
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            // Stale: one side was merged since this pair was proposed.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = r.next;
            if let Some(next) = r.next {
                symbols[next].prev = Some(b.left);
            }
            queue.extend(candidate(&symbols, l.prev, Some(b.left)));
            queue.extend(candidate(&symbols, Some(b.left), r.next));
        }
        let mut i = (n > 0).then_some(0);
        while let Some(s) = i.map(|i| symbols[i]) {
            let piece = &text[s.start..s.start + s.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                // Every merged symbol is a piece; a lone character that is not one is spelled
                // in bytes.
                None => {
                    for &byte in piece.as_bytes() {
                        let id =
                            self.byte_ids[byte as usize]
                                .or(self.unknown)
                                .ok_or_else(|| {
                                    format!(
                                    "has no token for the byte 0x{byte:02X} and no unknown token"
                                )
                                })?;
                        out.push(id);
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }

    /// The bytes that `id` stands for in text: control and user-defined pieces as written,
    /// `▁` as a space, a byte token as its byte, unused entries as nothing.
    pub fn bytes_of(&self, id: u32) -> Vec<u8> {
        let Some(piece) = self.pieces.get(id as usize) else {
            return vec![];
        };
        match self.kinds[id as usize] {
            TokenKind::Normal => piece.replace('\u{2581}', " ").into_bytes(),
            TokenKind::Byte => byte_of_piece(piece)
                .map(|b| vec![b])
                .unwrap_or_else(|| piece.as_bytes().to_vec()),
            TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown => {
                piece.as_bytes().to_vec()
            }
            TokenKind::Unused => vec![],
        }
    }

    /// The text of `ids`; byte tokens are joined before being read as UTF-8.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.bytes_of(id)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// `<0x41>` → `0x41`.
fn byte_of_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces with scores chosen so that the merge order is visible.
    fn vocab(add_space_prefix: bool) -> Spm {
        let mut entries: Vec<(String, f32, TokenKind)> = vec![
            ("<unk>".into(), 0.0, TokenKind::Unknown),
            ("<s>".into(), 0.0, TokenKind::Control),
            ("\n\n".into(), 0.0, TokenKind::UserDefined),
        ];
        entries.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, TokenKind::Byte)));
        for (p, s) in [
            ("a", -1.0),
            ("b", -1.0),
            ("c", -1.0),
            ("\u{2581}", -1.0),
            ("ab", -5.0),
            ("bc", -2.0),
            ("abc", -3.0),
            ("\u{2581}a", -4.0),
            ("\n", -1.0),
        ] {
            entries.push((p.into(), s, TokenKind::Normal));
        }
        let (pieces, rest): (Vec<_>, Vec<_>) =
            entries.into_iter().map(|(p, s, k)| (p, (s, k))).unzip();
        let (scores, kinds) = rest.into_iter().unzip();
        Spm::new(pieces, scores, kinds, add_space_prefix, Some(0)).unwrap()
    }

    fn pieces(s: &Spm, text: &str) -> Vec<String> {
        s.encode(text)
            .unwrap()
            .iter()
            .map(|&i| s.piece(i).unwrap().to_string())
            .collect()
    }

    #[test]
    fn merges_the_best_scoring_pair_first() {
        let s = vocab(false);
        // "bc" (−2) beats "ab" (−5); then "a"+"bc" → "abc" (−3).
        assert_eq!(pieces(&s, "abc"), ["abc"]);
        // "ab" alone.
        assert_eq!(pieces(&s, "ab"), ["ab"]);
        // "bc" wins over "ab"; nothing joins "a" and "bc" then "a".
        assert_eq!(pieces(&s, "abca"), ["abc", "a"]);
    }

    #[test]
    fn spaces_become_the_block_and_the_prefix_follows_the_file() {
        assert_eq!(pieces(&vocab(false), "a a"), ["a", "\u{2581}a"]);
        assert_eq!(pieces(&vocab(true), "a"), ["\u{2581}a"]);
        // After a special token the prefix comes back.
        assert_eq!(
            pieces(&vocab(true), "a<s>a"),
            ["\u{2581}a", "<s>", "\u{2581}a"]
        );
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes_and_decode_back() {
        let s = vocab(false);
        let ids = s.encode("aé").unwrap();
        assert_eq!(
            ids.iter().map(|&i| s.piece(i).unwrap()).collect::<Vec<_>>(),
            ["a", "<0xC3>", "<0xA9>"]
        );
        assert_eq!(s.decode(&ids), "aé");
    }

    #[test]
    fn special_pieces_are_cut_out_whole_and_bytes_lookalikes_are_text() {
        let s = vocab(false);
        assert_eq!(pieces(&s, "a\n\n\nb"), ["a", "\n\n", "\n", "b"]);
        assert_eq!(pieces(&s, "<s>"), ["<s>"]);
        let ids = s.encode("<0x41>").unwrap();
        assert!(ids.iter().all(|&i| s.kind(i) == Some(TokenKind::Byte)));
        assert_eq!(s.decode(&ids), "<0x41>");
        assert!(s.encode("").unwrap().is_empty());
    }

    #[test]
    fn inconsistent_lists_are_an_error() {
        let e = Spm::new(
            vec!["a".into()],
            vec![],
            vec![TokenKind::Normal],
            false,
            None,
        );
        assert!(e.unwrap_err().contains("1 tokens but 0 scores"));
    }
}

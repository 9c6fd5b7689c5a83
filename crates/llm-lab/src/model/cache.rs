//! The KV cache: keys and values of the tokens already seen, so each new token costs one step
//! instead of re-reading the whole prompt.
//!
//! Each layer keeps one buffer per K and V with room to spare; a step writes its rows in place and
//! reads a view of the filled part. Concatenating instead would copy the whole cache every token.

use candle_core::Tensor;

/// Positions reserved at first use; the buffers double when full.
const INITIAL_CAPACITY: usize = 128;

/// Keys and values per layer, each `[n_kv_heads, seq, d_head]`.
#[derive(Debug, Default)]
pub struct KvCache {
    /// Per layer, buffers `[n_kv_heads, capacity, d_head]` whose first `len` positions are filled.
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many positions the cache holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything: the next forward starts at position 0. Views handed out earlier keep
    /// their values, since the buffers are dropped, not overwritten.
    pub fn clear(&mut self) {
        self.layers.clear();
        self.len = 0;
    }

    /// Writes this step's keys and values of `layer` (`[n_kv_heads, seq, d_head]`) after the
    /// cached ones and returns views of all of them so far, `[n_kv_heads, len + seq, d_head]`.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        let (n_kv, seq, d) = k.dims3()?;
        let (start, end) = (self.len, self.len + seq);
        let slot = &mut self.layers[layer];
        let capacity = slot.as_ref().map_or(0, |(kb, _)| kb.dim(1).unwrap_or(0));
        if end > capacity {
            let new_capacity = end.next_power_of_two().max(INITIAL_CAPACITY);
            let grow = |old: Option<&Tensor>| -> candle_core::Result<Tensor> {
                let buf = Tensor::zeros((n_kv, new_capacity, d), k.dtype(), k.device())?;
                if let Some(old) = old {
                    buf.slice_set(&old.narrow(1, 0, start)?.contiguous()?, 1, 0)?;
                }
                Ok(buf)
            };
            *slot = Some((
                grow(slot.as_ref().map(|s| &s.0))?,
                grow(slot.as_ref().map(|s| &s.1))?,
            ));
        }
        let (kb, vb) = slot.as_ref().expect("allocated above");
        kb.slice_set(&k.contiguous()?, 1, start)?;
        vb.slice_set(&v.contiguous()?, 1, start)?;
        Ok((kb.narrow(1, 0, end)?, vb.narrow(1, 0, end)?))
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}

/// A clone owns copies of the buffers: the two caches then grow apart without writing into each
/// other's storage.
impl Clone for KvCache {
    fn clone(&self) -> Self {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.as_ref().map(|(k, v)| {
                    (
                        k.copy().expect("copying a CPU tensor"),
                        v.copy().expect("copying a CPU tensor"),
                    )
                })
            })
            .collect();
        KvCache {
            layers,
            len: self.len,
        }
    }
}

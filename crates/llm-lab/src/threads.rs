//! How many CPU threads the model's arithmetic uses.
//!
//! candle decides with `CANDLE_NUM_THREADS` (its worker pool, which runs the quantized products)
//! and `RAYON_NUM_THREADS` (the f32 products in attention). Without the latter it counts the
//! physical cores again on every f32 product, by reading `/proc/cpuinfo` on Linux: about 60 times
//! per generated token. Fixing the count once, at load, removes that without changing it.

use std::sync::Once;

/// Sets `RAYON_NUM_THREADS` to the count candle would compute anyway, if the user has not chosen.
pub(crate) fn settle() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            let n = candle_core::utils::get_num_threads();
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        }
    });
}

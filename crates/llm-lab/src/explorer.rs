//! The live temperature / top-p view of next-token probabilities.

use crate::display::rich_html;

/// An interactive view of next-token probabilities: sliders for temperature and top-p recompute
/// the bars in the browser (inline JavaScript, nothing loaded from the network).
#[derive(Debug, Clone)]
pub struct Explorer {
    /// The HTML, with its script.
    pub html: String,
}

impl Explorer {
    /// The `k` most likely tokens of `logits`, with their logits, as a live chart.
    pub fn new(logits: &crate::logits::Logits, k: usize) -> Self {
        let top = logits.top_k(k.max(2));
        let data: Vec<serde_json::Value> = top
            .iter()
            .map(|t| serde_json::json!({"t": crate::plot::token_label(&t.text), "z": t.logit}))
            .collect();
        // Distinct ids: several explorers may live in one notebook.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let id = format!(
            "llmlab-explorer-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let html = format!(
            r##"<div id="{id}" style="font-family:sans-serif;max-width:720px">
<div>temperatura T = <b class="tv">1.00</b> <input class="t" type="range" min="0" max="3" step="0.05" value="1" style="width:260px"></div>
<div>top-p p = <b class="pv">1.00</b> <input class="p" type="range" min="0.05" max="1" step="0.05" value="1" style="width:260px"></div>
<div class="bars" style="margin-top:8px"></div>
<p style="font-size:12px;color:#555">Os {k} tokens mais prováveis (os demais, fora desta lista, são ignorados aqui). Barras cinza: cortadas pelo top-p. T = 0 é a escolha gulosa.</p>
</div>
<script>
(function() {{
  const data = {data};
  const root = document.getElementById("{id}");
  const t = root.querySelector(".t"), p = root.querySelector(".p"), bars = root.querySelector(".bars");
  function draw() {{
    const T = parseFloat(t.value), P = parseFloat(p.value);
    root.querySelector(".tv").textContent = T.toFixed(2);
    root.querySelector(".pv").textContent = P.toFixed(2);
    const zmax = Math.max(...data.map(d => d.z));
    let probs = data.map(d => T === 0 ? (d.z === zmax ? 1 : 0) : Math.exp((d.z - zmax) / T));
    const sum = probs.reduce((a, b) => a + b, 0);
    probs = probs.map(x => x / sum);
    let acc = 0, reached = false;
    const kept = probs.map(x => {{ if (reached) return false; acc += x; reached = acc >= P - 1e-7; return true; }});
    const ksum = probs.reduce((a, x, i) => a + (kept[i] ? x : 0), 0);
    bars.innerHTML = data.map((d, i) => {{
      const q = kept[i] ? probs[i] / ksum : 0;
      const w = Math.round(q * 400);
      const colour = kept[i] ? "#4c72b0" : "#cccccc";
      return `<div style="display:flex;align-items:center;height:20px"><code style="width:120px;overflow:hidden">${{d.t}}</code>` +
             `<div style="background:${{colour}};height:14px;width:${{Math.max(w, 1)}}px"></div><span style="margin-left:6px;font-size:12px">${{(q * 100).toFixed(1)}} %</span></div>`;
    }}).join("");
  }}
  t.addEventListener("input", draw); p.addEventListener("input", draw); draw();
}})();
</script>"##,
            data = serde_json::Value::Array(data),
        );
        Explorer { html }
    }

    /// evcxr's rich display hook.
    pub fn evcxr_display(&self) {
        rich_html(&self.html);
    }
}

"""The peer of `llm-lab bench-train`: the same tiny Llama trained in JAX on the CPU.

Reads the run the Rust side wrote (config, token ids, the window starts of every batch, the
initial weights as safetensors), trains with optax's AdamW at the same settings on the very same
batches from the very same weights, and prints one JSON line: tokens/s after the first (compiling)
step, the compile time, the first and last training losses, the validation loss.

The forward pass is the one `llm_lab::train::TinyGpt` runs: pre-norm RMSNorm, RoPE on pairs
(2i, 2i+1), causal softmax attention, SwiGLU MLP, tied output matrix.
"""

import json
import struct
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{name}: dtype {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        out[name] = jnp.asarray(np.frombuffer(data[start:end], dtype="<f4").reshape(info["shape"]))
    return out


def main():
    run = json.load(open(sys.argv[1]))
    c = run["config"]
    n_layers, n_heads, d_model = c["n_layers"], c["n_heads"], c["d_model"]
    d_head, eps, theta = d_model // n_heads, c["rms_norm_eps"], c["rope_theta"]
    params = read_safetensors(run["init"])
    train = np.asarray(run["train_tokens"], dtype=np.int32)
    valid = np.asarray(run["valid_tokens"], dtype=np.int32)
    window = run["window"]

    inv_freq = 1.0 / theta ** (np.arange(0, d_head, 2, dtype=np.float32) / d_head)
    angles = np.arange(window, dtype=np.float32)[:, None] * inv_freq[None, :]  # [T, d/2]
    cos, sin = jnp.asarray(np.cos(angles)), jnp.asarray(np.sin(angles))
    mask = jnp.asarray(np.triu(np.full((window, window), -np.inf, dtype=np.float32), 1))

    def rms(x, g):
        return x / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * g

    def rotate(x):  # [B, H, T, d], pairs (2i, 2i+1)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        r0, r1 = x0 * cos - x1 * sin, x0 * sin + x1 * cos
        return jnp.stack([r0, r1], axis=-1).reshape(x.shape)

    def forward(p, ids):  # [B, T] -> [B, T, V]
        b, t = ids.shape
        x = p["token_embd.weight"][ids]
        for l in range(n_layers):
            w = lambda n: p[f"blk.{l}.{n}.weight"]
            h = rms(x, w("attn_norm"))
            heads = lambda m: (h @ m.T).reshape(b, t, n_heads, d_head).transpose(0, 2, 1, 3)
            q, k, v = rotate(heads(w("attn_q"))), rotate(heads(w("attn_k"))), heads(w("attn_v"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d_head) + mask[:t, :t]
            z = jax.nn.softmax(scores, axis=-1) @ v
            x = x + z.transpose(0, 2, 1, 3).reshape(b, t, d_model) @ w("attn_output").T
            h = rms(x, w("ffn_norm"))
            x = x + (jax.nn.silu(h @ w("ffn_gate").T) * (h @ w("ffn_up").T)) @ w("ffn_down").T
        x = rms(x, p["output_norm.weight"])
        return x @ p["token_embd.weight"].T

    def loss_fn(p, xs, ys):
        logits = forward(p, xs)
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, ys[..., None], axis=-1))

    opt = optax.adamw(run["lr"], b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.1)
    state = opt.init(params)

    @jax.jit
    def step(p, s, xs, ys):
        loss, grads = jax.value_and_grad(loss_fn)(p, xs, ys)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    evaluate = jax.jit(loss_fn)

    def batch(tokens, starts):
        idx = np.asarray(starts)[:, None] + np.arange(window)[None, :]
        return jnp.asarray(tokens[idx]), jnp.asarray(tokens[idx + 1])

    losses = []
    t0 = time.perf_counter()
    for i, starts in enumerate(run["train_starts"]):
        xs, ys = batch(train, starts)
        params, state, loss = step(params, state, xs, ys)
        losses.append(float(loss))  # waits for the step
        if i == 0:
            compiled = time.perf_counter()
    end = time.perf_counter()
    steady = len(run["train_starts"]) - 1
    tokens = steady * run["batch"] * window
    valid_loss = float(np.mean([float(evaluate(params, *batch(valid, s))) for s in run["valid_starts"]]))
    print(json.dumps({
        "engine": f"JAX {jax.__version__} (CPU, jit)",
        "tokens_per_s": tokens / (end - compiled) if steady > 0 else 0.0,
        "compile_s": compiled - t0,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "valid_loss": valid_loss,
    }))


if __name__ == "__main__":
    main()

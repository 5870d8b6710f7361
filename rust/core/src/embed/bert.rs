//! A BERT encoder's forward pass (inference only), mean pooling and L2 normalisation: what
//! sentence-transformers runs for all-MiniLM-L6-v2, in plain f32 over `matrixmultiply`.
//!
//! Sequences are not padded: the tokens of every sequence in a batch are stacked into one
//! `[tokens, hidden]` matrix so each dense layer is one large matrix product, and attention
//! runs per sequence over its own tokens only. Padding would cost up to `max_len / len` times
//! the work on mixed-length batches and needs no mask this way.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::{CoreError, CoreResult};

/// The architecture, as in the model's `config.json`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BertConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub max_positions: usize,
    pub vocab: usize,
    pub layer_norm_eps: f32,
}

impl BertConfig {
    /// all-MiniLM-L6-v2 (`nreimers/MiniLM-L6-H384-uncased`).
    pub const MINILM_L6: BertConfig = BertConfig {
        hidden: 384,
        layers: 6,
        heads: 12,
        intermediate: 1536,
        max_positions: 512,
        vocab: 30522,
        layer_norm_eps: 1e-12,
    };
}

/// Dense weights are stored transposed, `[in, out]` row-major (PyTorch saves `[out, in]`):
/// the small-batch kernel streams rows of them, and GEMM packing reads them in order.
struct Layer {
    /// Query, key and value weights side by side: `[hidden, 3 * hidden]`, biases `[3 * hidden]`.
    qkv_w: Vec<f32>,
    qkv_b: Vec<f32>,
    attn_out_w: Vec<f32>,
    attn_out_b: Vec<f32>,
    attn_ln_g: Vec<f32>,
    attn_ln_b: Vec<f32>,
    inter_w: Vec<f32>,
    inter_b: Vec<f32>,
    out_w: Vec<f32>,
    out_b: Vec<f32>,
    out_ln_g: Vec<f32>,
    out_ln_b: Vec<f32>,
}

/// The weights of a BERT encoder.
pub struct Bert {
    pub config: BertConfig,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type0: Vec<f32>,
    emb_ln_g: Vec<f32>,
    emb_ln_b: Vec<f32>,
    layers: Vec<Layer>,
}

fn storage(message: String) -> CoreError {
    CoreError::Storage(message)
}

impl Bert {
    /// Loads `model.safetensors` (f32, names as `BertModel` saves them, with or without a
    /// `bert.` prefix).
    pub fn load(path: &Path, config: BertConfig) -> CoreResult<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| storage(format!("cannot read {}: {e}", path.display())))?;
        Self::from_bytes(&bytes, config)
    }

    pub fn from_bytes(bytes: &[u8], config: BertConfig) -> CoreResult<Self> {
        let tensors = SafeTensors::deserialize(bytes)
            .map_err(|e| storage(format!("not a safetensors file: {e}")))?;
        let h = config.hidden;
        let get = |name: &str, shape: &[usize]| -> CoreResult<Vec<f32>> {
            let view = tensors
                .tensor(name)
                .or_else(|_| tensors.tensor(&format!("bert.{name}")))
                .map_err(|_| storage(format!("weights lack tensor {name}")))?;
            if view.dtype() != Dtype::F32 || view.shape() != shape {
                return Err(storage(format!(
                    "tensor {name}: expected f32 {shape:?}, found {:?} {:?}",
                    view.dtype(),
                    view.shape()
                )));
            }
            Ok(view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let p = format!("encoder.layer.{i}");
            let mut qkv_w = get(&format!("{p}.attention.self.query.weight"), &[h, h])?;
            qkv_w.extend(get(&format!("{p}.attention.self.key.weight"), &[h, h])?);
            qkv_w.extend(get(&format!("{p}.attention.self.value.weight"), &[h, h])?);
            let mut qkv_b = get(&format!("{p}.attention.self.query.bias"), &[h])?;
            qkv_b.extend(get(&format!("{p}.attention.self.key.bias"), &[h])?);
            qkv_b.extend(get(&format!("{p}.attention.self.value.bias"), &[h])?);
            let inter = config.intermediate;
            layers.push(Layer {
                qkv_w: transpose(&qkv_w, 3 * h, h),
                qkv_b,
                attn_out_w: transpose(
                    &get(&format!("{p}.attention.output.dense.weight"), &[h, h])?,
                    h,
                    h,
                ),
                attn_out_b: get(&format!("{p}.attention.output.dense.bias"), &[h])?,
                attn_ln_g: get(&format!("{p}.attention.output.LayerNorm.weight"), &[h])?,
                attn_ln_b: get(&format!("{p}.attention.output.LayerNorm.bias"), &[h])?,
                inter_w: transpose(
                    &get(&format!("{p}.intermediate.dense.weight"), &[inter, h])?,
                    inter,
                    h,
                ),
                inter_b: get(
                    &format!("{p}.intermediate.dense.bias"),
                    &[config.intermediate],
                )?,
                out_w: transpose(
                    &get(&format!("{p}.output.dense.weight"), &[h, inter])?,
                    h,
                    inter,
                ),
                out_b: get(&format!("{p}.output.dense.bias"), &[h])?,
                out_ln_g: get(&format!("{p}.output.LayerNorm.weight"), &[h])?,
                out_ln_b: get(&format!("{p}.output.LayerNorm.bias"), &[h])?,
            });
        }
        let token_types = get("embeddings.token_type_embeddings.weight", &[2, h])?;
        Ok(Bert {
            word: get("embeddings.word_embeddings.weight", &[config.vocab, h])?,
            position: get(
                "embeddings.position_embeddings.weight",
                &[config.max_positions, h],
            )?,
            token_type0: token_types[..h].to_vec(),
            emb_ln_g: get("embeddings.LayerNorm.weight", &[h])?,
            emb_ln_b: get("embeddings.LayerNorm.bias", &[h])?,
            layers,
            config,
        })
    }

    /// Mean-pooled, L2-normalised sentence vectors for `sequences` (token ids including
    /// `[CLS]`/`[SEP]`), written row after row into `out` (`sequences.len() * hidden`).
    ///
    /// Every id must be below the vocabulary size and every sequence at most
    /// `max_positions` long and non-empty; the caller (`LocalEmbedder`) guarantees it.
    pub fn embed_into(&self, sequences: &[&[u32]], out: &mut [f32]) {
        let h = self.config.hidden;
        let total: usize = sequences.iter().map(|s| s.len()).sum();
        let mut x = vec![0f32; total * h];
        // Embeddings: word + position + token type 0, then LayerNorm.
        let mut row = 0;
        for seq in sequences {
            for (pos, &id) in seq.iter().enumerate() {
                let dst = &mut x[row * h..(row + 1) * h];
                let w = &self.word[id as usize * h..(id as usize + 1) * h];
                let p = &self.position[pos * h..(pos + 1) * h];
                for j in 0..h {
                    dst[j] = w[j] + p[j] + self.token_type0[j];
                }
                row += 1;
            }
        }
        layer_norm(
            &mut x,
            h,
            &self.emb_ln_g,
            &self.emb_ln_b,
            self.config.layer_norm_eps,
        );

        let mut qkv = vec![0f32; total * 3 * h];
        let mut ctx = vec![0f32; total * h];
        let mut inter = vec![0f32; total * self.config.intermediate];
        let longest = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut scores = vec![0f32; longest * longest];
        for layer in &self.layers {
            self.attention(layer, sequences, &x, &mut qkv, &mut ctx, &mut scores);
            // Attention output: dense, residual, LayerNorm (the result replaces x).
            linear(
                &ctx,
                total,
                h,
                &layer.attn_out_w,
                &layer.attn_out_b,
                h,
                &mut qkv[..total * h],
            );
            let attn = &mut qkv[..total * h];
            for (a, xi) in attn.iter_mut().zip(&x) {
                *a += xi;
            }
            layer_norm(
                attn,
                h,
                &layer.attn_ln_g,
                &layer.attn_ln_b,
                self.config.layer_norm_eps,
            );
            x.copy_from_slice(attn);
            // Feed-forward: dense + GELU, dense, residual, LayerNorm.
            let inner = self.config.intermediate;
            linear(
                &x,
                total,
                h,
                &layer.inter_w,
                &layer.inter_b,
                inner,
                &mut inter,
            );
            gelu_in_place(&mut inter);
            linear(
                &inter,
                total,
                inner,
                &layer.out_w,
                &layer.out_b,
                h,
                &mut ctx,
            );
            for (c, xi) in ctx.iter_mut().zip(&x) {
                *c += xi;
            }
            layer_norm(
                &mut ctx,
                h,
                &layer.out_ln_g,
                &layer.out_ln_b,
                self.config.layer_norm_eps,
            );
            std::mem::swap(&mut x, &mut ctx);
        }
        // Mean pooling over each sequence's tokens, then L2 normalisation.
        let mut row = 0;
        for (i, seq) in sequences.iter().enumerate() {
            let dst = &mut out[i * h..(i + 1) * h];
            dst.fill(0.0);
            for r in row..row + seq.len() {
                for (d, v) in dst.iter_mut().zip(&x[r * h..(r + 1) * h]) {
                    *d += v;
                }
            }
            row += seq.len();
            let norm = dst.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            for d in dst.iter_mut() {
                *d /= norm;
            }
        }
    }

    /// Multi-head self-attention of every sequence over its own tokens; writes the heads'
    /// concatenated context vectors into `ctx` (`[tokens, hidden]`).
    fn attention(
        &self,
        layer: &Layer,
        sequences: &[&[u32]],
        x: &[f32],
        qkv: &mut [f32],
        ctx: &mut [f32],
        scores: &mut [f32],
    ) {
        let h = self.config.hidden;
        let total = x.len() / h;
        let heads = self.config.heads;
        let dh = h / heads;
        let stride = 3 * h;
        linear(x, total, h, &layer.qkv_w, &layer.qkv_b, stride, qkv);
        let scale = 1.0 / (dh as f32).sqrt();
        let mut offset = 0;
        for seq in sequences {
            let len = seq.len();
            let base = offset * stride;
            if len <= SMALL_ATTENTION {
                for head in 0..heads {
                    small_head_attention(
                        &qkv[base..base + len * stride],
                        h,
                        head * dh,
                        dh,
                        scale,
                        &mut scores[..len * len],
                        &mut ctx[offset * h..(offset + len) * h],
                    );
                }
                offset += len;
                continue;
            }
            for head in 0..heads {
                let q = qkv[base + head * dh..].as_ptr();
                let k = qkv[base + h + head * dh..].as_ptr();
                let v = qkv[base + 2 * h + head * dh..].as_ptr();
                let s = &mut scores[..len * len];
                // SAFETY: the pointers address `len` rows of `dh` values with row stride
                // `stride` inside `qkv`, and `s` holds `len * len` values; matrixmultiply
                // reads and writes only within those bounds.
                unsafe {
                    matrixmultiply::sgemm(
                        len,
                        dh,
                        len,
                        scale,
                        q,
                        stride as isize,
                        1,
                        k,
                        1,
                        stride as isize,
                        0.0,
                        s.as_mut_ptr(),
                        len as isize,
                        1,
                    );
                }
                for r in s.chunks_exact_mut(len) {
                    softmax(r);
                }
                let c = ctx[offset * h + head * dh..].as_mut_ptr();
                // SAFETY: as above; `c` addresses `len` rows of `dh` values with row stride
                // `h` inside `ctx`.
                unsafe {
                    matrixmultiply::sgemm(
                        len,
                        len,
                        dh,
                        1.0,
                        s.as_ptr(),
                        len as isize,
                        1,
                        v,
                        stride as isize,
                        1,
                        0.0,
                        c,
                        h as isize,
                        1,
                    );
                }
            }
            offset += len;
        }
    }
}

/// Sequences up to this many tokens attend with plain loops (`small_head_attention`).
const SMALL_ATTENTION: usize = 64;

/// One head's attention over one short sequence with plain loops: at these sizes packing the
/// operands for a GEMM costs more than the arithmetic. `qkv` holds the sequence's rows
/// (`[len, 3 * hidden]`), `ctx` its output rows (`[len, hidden]`).
fn small_head_attention(
    qkv: &[f32],
    hidden: usize,
    head_offset: usize,
    dh: usize,
    scale: f32,
    scores: &mut [f32],
    ctx: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the only feature the function is compiled for.
        unsafe { small_head_attention_avx2(qkv, hidden, head_offset, dh, scale, scores, ctx) };
        return;
    }
    small_head_attention_body(qkv, hidden, head_offset, dh, scale, scores, ctx);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn small_head_attention_avx2(
    qkv: &[f32],
    hidden: usize,
    head_offset: usize,
    dh: usize,
    scale: f32,
    scores: &mut [f32],
    ctx: &mut [f32],
) {
    small_head_attention_body(qkv, hidden, head_offset, dh, scale, scores, ctx);
}

#[inline(always)]
fn small_head_attention_body(
    qkv: &[f32],
    hidden: usize,
    head_offset: usize,
    dh: usize,
    scale: f32,
    scores: &mut [f32],
    ctx: &mut [f32],
) {
    let stride = 3 * hidden;
    let len = qkv.len() / stride;
    let q_at = |i: usize| &qkv[i * stride + head_offset..i * stride + head_offset + dh];
    let k_at = |j: usize| {
        let at = j * stride + hidden + head_offset;
        &qkv[at..at + dh]
    };
    let v_at = |j: usize| {
        let at = j * stride + 2 * hidden + head_offset;
        &qkv[at..at + dh]
    };
    for i in 0..len {
        let q = q_at(i);
        let row = &mut scores[i * len..(i + 1) * len];
        for (j, r) in row.iter_mut().enumerate() {
            *r = dot(q, k_at(j)) * scale;
        }
        softmax(row);
        let out = &mut ctx[i * hidden + head_offset..i * hidden + head_offset + dh];
        out.fill(0.0);
        for (j, &p) in row.iter().enumerate() {
            for (o, v) in out.iter_mut().zip(v_at(j)) {
                *o += p * v;
            }
        }
    }
}

/// A dot product with eight independent partial sums, so it vectorizes.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for t in 0..8 {
            acc[t] += x[t] * y[t];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// `w` (`[rows, cols]` row-major) transposed.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

/// Up to this many rows, a dense layer runs the streaming kernel below instead of a GEMM:
/// a GEMM packs the whole weight matrix on every call, which for one short text costs more
/// than the arithmetic.
const SMALL_ROWS: usize = 32;

/// `out[rows, n] = x[rows, k] · wt + b` with `wt` stored `[k, n]` (the transposed weight).
fn linear(x: &[f32], rows: usize, k: usize, wt: &[f32], b: &[f32], n: usize, out: &mut [f32]) {
    assert!(x.len() >= rows * k && wt.len() == n * k && b.len() == n && out.len() >= rows * n);
    for r in out[..rows * n].chunks_exact_mut(n) {
        r.copy_from_slice(b);
    }
    if rows <= SMALL_ROWS {
        small_linear(&x[..rows * k], k, wt, n, &mut out[..rows * n]);
        return;
    }
    // SAFETY: the asserts above bound every access matrixmultiply makes.
    unsafe {
        matrixmultiply::sgemm(
            rows,
            k,
            n,
            1.0,
            x.as_ptr(),
            k as isize,
            1,
            wt.as_ptr(),
            n as isize,
            1,
            1.0,
            out.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// `out += x · wt` for a few rows: for each block of 16 output columns and 4 rows, the
/// accumulators stay in registers while the weight rows stream past once per row block
/// (from L1/L2: a 16-column slab of `wt` is at most 96 KiB).
fn small_linear(x: &[f32], k: usize, wt: &[f32], n: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, the features the function is compiled for.
        unsafe { small_linear_fma(x, k, wt, n, out) };
        return;
    }
    small_linear_body::<Plain>(x, k, wt, n, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn small_linear_fma(x: &[f32], k: usize, wt: &[f32], n: usize, out: &mut [f32]) {
    small_linear_body::<Fused>(x, k, wt, n, out);
}

trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}
/// `a * b + c` in one rounding: an FMA instruction where the CPU has one.
struct Fused;
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}
/// Without FMA, `f32::mul_add` would be a library call: multiply, then add.
struct Plain;
impl MulAdd for Plain {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

#[inline(always)]
fn small_linear_body<M: MulAdd>(x: &[f32], k: usize, wt: &[f32], n: usize, out: &mut [f32]) {
    const NB: usize = 16;
    const RB: usize = 4;
    let rows = x.len() / k;
    let mut c0 = 0;
    while c0 < n {
        let width = NB.min(n - c0);
        let mut r0 = 0;
        while r0 < rows {
            let rb = RB.min(rows - r0);
            let mut acc = [[0f32; NB]; RB];
            if width == NB {
                for kk in 0..k {
                    let w: &[f32; NB] = wt[kk * n + c0..kk * n + c0 + NB].try_into().unwrap();
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        // Rows past the end repeat the last one; their sums are dropped.
                        let a = x[(r0 + r.min(rb - 1)) * k + kk];
                        for t in 0..NB {
                            acc_r[t] = M::mul_add(a, w[t], acc_r[t]);
                        }
                    }
                }
            } else {
                for kk in 0..k {
                    let w = &wt[kk * n + c0..kk * n + c0 + width];
                    for (r, acc_r) in acc.iter_mut().enumerate().take(rb) {
                        let a = x[(r0 + r) * k + kk];
                        for t in 0..width {
                            acc_r[t] = M::mul_add(a, w[t], acc_r[t]);
                        }
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(rb) {
                let dst = &mut out[(r0 + r) * n + c0..(r0 + r) * n + c0 + width];
                for (d, v) in dst.iter_mut().zip(acc_r) {
                    *d += v;
                }
            }
            r0 += RB;
        }
        c0 += NB;
    }
}

fn layer_norm(x: &mut [f32], h: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(h) {
        let mean = row.iter().sum::<f32>() / h as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

#[inline(always)]
fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// BERT's exact GELU, `x · Φ(x)`, not the tanh approximation.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_rational(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU over a whole activation buffer: the rational erf below is branch-free arithmetic,
/// so this loop vectorizes (an `exp` per element would not); it was a third of the time of
/// a forward pass with the `exp`-based erf.
pub(crate) fn gelu_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the only feature the function is compiled for.
        unsafe { gelu_avx2(values) };
        return;
    }
    for v in values.iter_mut() {
        *v = gelu(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_avx2(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = gelu(*v);
    }
}

/// erf as a rational function of x on [-4, 4] (±1 beyond, where f32 erf is ±1 anyway): the
/// minimax fit Eigen and XLA use for float, accurate to a few ulp.
#[inline(always)]
fn erf_rational(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_1e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_2e-3;
    q = x2 * q + -1.426_474e-2;
    p / q
}

/// erf with absolute error below 1.2e-7 (Numerical Recipes' `erfc` Chebyshev fit): the
/// reference the fast rational erf is tested against; std has no stable `erf`.
#[cfg(test)]
fn erf(x: f32) -> f32 {
    let z = f64::from(x.abs());
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    let r = (1.0 - erfc) as f32;
    if x >= 0.0 {
        r
    } else {
        -r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (2.0, 0.995_322_3),
            (-1.0, -0.842_700_8),
        ] {
            assert!((erf(x) - want).abs() < 2e-7, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn small_attention_matches_the_gemm_path() {
        let (hidden, heads, len) = (8usize, 2usize, 5usize);
        let dh = hidden / heads;
        let qkv: Vec<f32> = (0..len * 3 * hidden)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0)
            .collect();
        let scale = 1.0 / (dh as f32).sqrt();
        let mut small = vec![0f32; len * hidden];
        let mut scores = vec![0f32; len * len];
        for head in 0..heads {
            small_head_attention(&qkv, hidden, head * dh, dh, scale, &mut scores, &mut small);
        }
        // The same with explicit loops in f64.
        for head in 0..heads {
            for i in 0..len {
                let s: Vec<f64> = (0..len)
                    .map(|j| {
                        (0..dh)
                            .map(|d| {
                                f64::from(qkv[i * 3 * hidden + head * dh + d])
                                    * f64::from(qkv[j * 3 * hidden + hidden + head * dh + d])
                            })
                            .sum::<f64>()
                            * f64::from(scale)
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..dh {
                    let want: f64 = (0..len)
                        .map(|j| {
                            e[j] / z * f64::from(qkv[j * 3 * hidden + 2 * hidden + head * dh + d])
                        })
                        .sum();
                    let got = f64::from(small[i * hidden + head * dh + d]);
                    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn rational_erf_matches_the_precise_one() {
        let mut worst = 0f32;
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            worst = worst.max((erf_rational(x) - erf(x)).abs());
        }
        assert!(worst < 1e-6, "max |Δerf| = {worst}");
    }

    #[test]
    fn softmax_and_layer_norm() {
        let mut r = [1.0f32, 2.0, 3.0];
        softmax(&mut r);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(r[2] > r[1] && r[1] > r[0]);
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        layer_norm(&mut x, 4, &[1.0; 4], &[0.0; 4], 1e-12);
        assert!(x.iter().sum::<f32>().abs() < 1e-5);
        assert!((x.iter().map(|v| v * v).sum::<f32>() / 4.0 - 1.0).abs() < 1e-4);
    }

    #[test]
    fn linear_uses_transposed_weights() {
        // x = [[1, 2]], w = [[1, 0], [0, 1], [1, 1]] (PyTorch's [out, in]) → [1, 2, 3] + b
        let wt = transpose(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 3, 2);
        let mut out = [0f32; 3];
        linear(&[1.0, 2.0], 1, 2, &wt, &[0.5, 0.5, 0.5], 3, &mut out);
        assert_eq!(out, [1.5, 2.5, 3.5]);
    }

    #[test]
    fn small_kernel_and_gemm_agree() {
        // Odd sizes: row blocks and column blocks with tails.
        let (k, n) = (37usize, 53usize);
        let wt: Vec<f32> = (0..k * n)
            .map(|i| ((i * 31 % 17) as f32 - 8.0) / 9.0)
            .collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32 / 10.0).collect();
        for rows in [1usize, 3, 4, 5, 13, SMALL_ROWS, SMALL_ROWS + 7] {
            let x: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
                .collect();
            let mut got = vec![0f32; rows * n];
            linear(&x, rows, k, &wt, &b, n, &mut got);
            for r in 0..rows {
                for c in 0..n {
                    let want: f64 = f64::from(b[c])
                        + (0..k)
                            .map(|i| f64::from(x[r * k + i]) * f64::from(wt[i * n + c]))
                            .sum::<f64>();
                    assert!(
                        (f64::from(got[r * n + c]) - want).abs() < 1e-4,
                        "{rows} {r} {c}"
                    );
                }
            }
        }
    }
}

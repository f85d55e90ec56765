"""OUT: hidden state to logits (claims OUT-1 .. OUT-7).

OUT-1 and OUT-7 check the target's own forward pass; OUT-3 checks which matrix it
unembeds with; OUT-2, OUT-4, OUT-5 and OUT-6 are about the mathematics of dot-product
read-out, worked on the target's own matrices (E or U) and, where they need a
softmax, on the target's own softmax. Math on the target's matrices is done in
float64, so its tolerances are float64 rounding bounds of a d-term dot product
(gamma_d = d u / (1 - d u) with u = 2^-53, rounded up to 4 (d + 2) u), never the
target's class. OUT-4, OUT-5 and OUT-6 look at every row of E (column of U): rows that are exactly zero or
repeat another bit for bit are facts about the weights, set aside by ``checkable_rows`` and reported as notes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from hypothesis import strategies as st
from torch import Tensor

from spec.catalog import claim
from spec.oracles import exact_softmax, softmax_error_bound, toy_logits, unit_roundoff, within
from spec.strategies import built_configs, permutations, seeds, target_ids, token_ids
from spec.target import Target, note
from spec.tolerance import CLASSES, ToleranceClass, assert_close, assert_equal, assert_logits_close, check

_U64 = 2.0**-53
_CHUNK = 8192  # rows of a table converted to float64 at a time (real vocabularies are 30k-250k rows)


def _dot_bound(d: int) -> float:
    """Relative rounding bound of a float64 dot product of length d (gamma_d, with margin)."""
    return 4 * (d + 2) * _U64


def _scores(vectors: Tensor, table: Tensor) -> Tensor:
    """vectors [k, d] (float64) dotted with every row of table [V, d], in float64 by chunks: [k, V]."""
    return torch.cat([vectors @ chunk.detach().double().cpu().T for chunk in table.split(_CHUNK)], dim=1)


def _bits(rows: Tensor) -> Tensor:
    """rows [n, d] as integers of the same width, bit for bit (on the CPU)."""
    t = rows.detach().cpu().contiguous()
    return t.view({8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}[t.element_size()])


def repeated_rows(table: Tensor) -> list[list[int]]:
    """Groups of row indices whose rows are bit-identical (each group sorted, groups by first index).

    Every row is first keyed by a hash of its bits, block by block (a fixed random odd multiplier per column, the
    products summed modulo 2^64); only rows that share a key are then compared bit for bit. So the whole table is
    never copied or sorted at once (a 128k x 2048 table is 1 GB), and the groups are exact."""
    if table.shape[0] < 2:
        return []
    mult = torch.randint(-2**61, 2**61, (table.shape[1],), generator=torch.Generator().manual_seed(0),
                         dtype=torch.int64) * 2 + 1
    rows_per = max(1, (1 << 20) // max(1, table.shape[1]))
    keys = torch.cat([(_bits(chunk).to(torch.int64) * mult).sum(dim=1) for chunk in table.split(rows_per)])
    _, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    candidates = (counts[inverse] > 1).nonzero().flatten()  # ascending
    if candidates.numel() == 0:
        return []
    _, inverse, counts = torch.unique(_bits(table[candidates.to(table.device)]), dim=0, return_inverse=True,
                                      return_counts=True)
    repeated = (counts[inverse] > 1).nonzero().flatten()
    rows, keys = candidates[repeated], inverse[repeated]
    order = torch.sort(keys, stable=True).indices  # rows of one group together, still ascending within it
    rows, keys = rows[order], keys[order]
    sizes = torch.unique_consecutive(keys, return_counts=True)[1]
    return sorted(group.tolist() for group in rows.split(sizes.tolist()))


_SEEN: list[tuple[Tensor, tuple[object, ...], Tensor, list[list[int]]]] = []  # the last table scanned


def _special_rows(table: Tensor) -> tuple[Tensor, list[list[int]]]:
    """The zero rows (a mask [V]) and the groups of repeated rows of ``table``, scanned once per table: every
    example of a claim asks about the same E or U, so the scan of the last table is kept, with a reference to it
    (its memory cannot be reused by another table while the key stands) and its version counter (an in-place edit
    of the weights makes a new key)."""
    key = (table.untyped_storage().data_ptr(), table.storage_offset(), tuple(table.shape), table.stride(),
           table.dtype, table.device, table._version)
    if _SEEN and _SEEN[0][1] == key:
        return _SEEN[0][2], _SEEN[0][3]
    zero = torch.cat([(chunk == 0).all(dim=1).cpu() for chunk in table.detach().split(_CHUNK)])
    groups = [g for g in repeated_rows(table) if not bool(zero[g[0]])]  # several zero rows are reported as zero
    _SEEN[:] = [(table, key, zero, groups)]
    return zero, groups


def _id_list(ids: list[int], limit: int = 8) -> str:
    """'[2]', or the first ``limit`` IDs and how many more: '[0, 1, ..., 7, … +89 more]'."""
    more = f", … +{len(ids) - limit} more" if len(ids) > limit else ""
    return "[" + ", ".join(map(str, ids[:limit])) + more + "]"


def _group_list(groups: list[list[int]], rows: str = "rows", limit: int = 4, members: int = 8) -> str:
    """'15 rows in 4 groups: {5, 9, 11, 36743}, {7, 45175}, ...': at most ``limit`` groups of ``members`` IDs."""
    def one(g: list[int]) -> str:
        return "{" + ", ".join(map(str, g[:members])) + (f", … +{len(g) - members}" if len(g) > members else "") + "}"
    shown = ", ".join(one(g) for g in groups[:limit])
    more = f", … +{len(groups) - limit} more groups" if len(groups) > limit else ""
    return f"{sum(map(len, groups))} {rows} in {len(groups)} group{'s' if len(groups) > 1 else ''}: {shown}{more}"


def checkable_rows(table: Tensor, what: str, rows: str = "rows") -> Tensor:
    """Which rows of ``table`` [V, d] a claim about the geometry of its rows checks: a bool mask [V].

    A row that is exactly zero (a padding row: nn.Embedding(padding_idx=...)) has no direction, and rows that
    repeat one another bit for bit (tokens never seen in training) are one direction under several IDs. Both are
    facts about the weights, not about how the target computes, so the claims set them aside, for every row of
    the table at once (never depending on which rows an example draws), and name them with spec.target.note.
    Fewer than two rows left is a failure: the claim would pass on nothing.
    """
    zero, groups = _special_rows(table)
    keep = ~zero
    for g in groups:
        keep[g] = False
    if bool(zero.any()):
        note(f"zero {rows} of {what} (excluded)", _id_list(zero.nonzero().flatten().tolist()))
    if groups:
        note(f"repeated {rows} of {what} (excluded)", _group_list(groups, rows))
    left = int(keep.sum())
    check(left >= 2, f"only {left} of the {len(table)} {rows} of {what} are neither exactly zero nor repeated: "
                     f"nothing left for the claim to check")
    return keep


def _drawn_row(keep: Tensor) -> st.SearchStrategy[int]:
    """A row index among the kept ones (the plain integer strategy when every row is kept, as before)."""
    if bool(keep.all()):
        return st.integers(0, len(keep) - 1)
    return st.sampled_from(keep.nonzero().flatten().tolist())


def _row_norms(table: Tensor) -> Tensor:
    """|row| of every row of table [V, d], in float64."""
    return torch.cat([chunk.detach().double().cpu().norm(dim=1) for chunk in table.split(_CHUNK)])


def _token_list(data: st.DataObject, vocab: int, label: str, max_size: int = 8) -> list[int]:
    return data.draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=max_size), label=label)


def _width_of(target: Target) -> int | None:
    """d_model from whatever the target exposes, or None."""
    have = target.capabilities
    if "config" in have:
        return target.config().d_model
    if "embedding_matrix" in have:
        return int(target.embedding_matrix().shape[1])
    return None


@claim("OUT-1", "Each logit is the dot product of the final (normed) hidden state with that token's column of U, "
                "plus its bias: the whole vector is one matrix product.",
       source="embedding-to-choice §9-11; tokens-as-directions §3.2",
       needs=("residual_states", "final_norm", "unembedding"),
       tolerance="the target's tolerance class: its logits and a float64 product of its own final state and U are "
                 "two orderings of the same d-term sums",
       precise="'the final hidden state' is made concrete as final_norm(last residual state); each drawn entry is "
               "also recomputed as an explicit elementwise dot product h . U[:, i] + b[i]. A logit scale or soft cap "
               "the architecture declares (departures(): Cohere's logit_scale, Granite's logits_scaling, Gemma 2's "
               "final_logit_softcapping) is applied to that product and reported; an undeclared one fails")
def out_1(target: Target, data: st.DataObject) -> None:
    """For drawn ids: logits(ids) == final_norm(residual_states(ids)[-1]) @ U + b, the whole matrix in float64, and
    for drawn token indices i, logits[..., i] == sum_k h_k U[k, i] + b[i] as an explicit sum."""
    tol = CLASSES[target.tolerance]
    ids = data.draw(target_ids(target, max_len=8, batch=data.draw(st.integers(1, 2), label="batch")), label="ids")
    U, b = target.unembedding()
    d, v = U.shape
    check(v == target.vocab_size, f"U has {v} columns, the vocabulary {target.vocab_size}")
    z = target.logits(ids)
    h = target.final_norm(target.residual_states(ids)[-1]).double().cpu()
    check(h.shape[-1] == d, f"final hidden state width {h.shape[-1]} != U's {d} rows")
    Ud = U.detach().double().cpu()
    bd = None if b is None else b.detach().double().cpu()
    declared = target.departures()
    after, what = _declared_logits(declared.logit_scale, declared.logit_softcap)
    expected = h @ Ud + (0 if bd is None else bd)
    assert_close(z, after(expected).to(z.dtype), tol, f"logits vs {what('final_norm(h) @ U + b')}")
    for i in _token_list(data, v, "token_indices", max_size=4):
        dot = (h * Ud[:, i]).sum(dim=-1) + (0.0 if bd is None else bd[i])
        assert_close(z[..., i], after(dot).to(z.dtype), tol, f"logit of token {i} vs {what(f'h . U[:, {i}] + b[{i}]')}")


def _declared_logits(scale: float, softcap: float | None) -> tuple[Callable[[Tensor], Tensor], Callable[[str], str]]:
    """The map a declared logit scale and soft cap apply after h U + b (the identity where none is declared), and
    the words for it; each declared one is reported."""
    words = "{}"
    if scale != 1.0:
        note("logit scale", f"{scale:.6g}, declared: logits = {scale:.6g} (h U + b)")
        words = f"{scale:.6g} ({words})"
    if softcap is not None:
        note("logit soft cap", f"{softcap:g}, declared: logits = c tanh(z / c)")
        words = f"{softcap:g} tanh({words} / {softcap:g})"

    def after(z: Tensor) -> Tensor:
        z = z * scale
        return z if softcap is None else softcap * torch.tanh(z / softcap)

    return after, words.format


_TOY_LOGITS = [5.0, 6.0, 4.0, 2.0, 7.0, 4.0]
_TOY_SOFTMAX_4DP = [0.0841, 0.2286, 0.0309, 0.0042, 0.6213, 0.0309]


@claim("OUT-2", "The documents' toy example: h = [2, 1, 0, 3] against the six output vectors gives logits "
                "[5, 6, 4, 2, 7, 4], picks \"quickly\", and softmax [0.0841, 0.2286, 0.0309, 0.0042, 0.6213, 0.0309].",
       source="embedding-to-choice §12-13", needs=("softmax",), kind="exact",
       tolerance="logits exact (small integers are exact in every float format); softmax within 5e-5 of the "
                 "published 4-decimal values (half a unit in the 4th decimal is the rounding of the figures "
                 "themselves), plus the dtype's rounding bound (see spec.claims.soft) for half-precision targets, "
                 "and within the derived softmax rounding bound of the exact float64 softmax",
       precise="the document's own probabilities (0.48, 0.29, 0.14, 0.04, 0.04, 0.01) were illustrative, as it says; "
               "the property records the exact softmax to 4 decimals. The logits are a plain matrix product in the "
               "target's dtype and device (the toy U is not the target's); the softmax is the target's own. Listing "
               "the six tokens in any drawn order permutes everything the same way")
def out_2(target: Target, data: st.DataObject) -> None:
    """With the six toy output vectors as the columns of U in a drawn order: h U == [5, 6, 4, 2, 7, 4] (permuted)
    exactly; the argmax is "quickly"; softmax(h U) == the published values (5e-5) and the exact softmax; "runs" and
    "banana" (both 4) get equal probability; the order is quickly > cat > the > runs = banana > blue."""
    order = data.draw(permutations(6), label="order").tolist()
    dtype, device = target.dtype, target.device
    names, z = toy_logits(order, dtype, device)
    assert_equal(z, torch.tensor([_TOY_LOGITS[i] for i in order], dtype=dtype, device=device), "toy logits h U")
    check(names[int(z.argmax())] == "quickly", f"toy argmax is {names[int(z.argmax())]!r}, not 'quickly'")
    p, = target.softmax(z.unsqueeze(0), 1.0)
    published = torch.tensor([_TOY_SOFTMAX_4DP[i] for i in order], dtype=torch.float64)
    u = unit_roundoff(z.dtype, p.dtype)
    tiny = max(torch.finfo(z.dtype).tiny, torch.finfo(p.dtype).tiny)
    bound = softmax_error_bound(z.unsqueeze(0), 1.0, u, tiny)[0]
    half = p.dtype in (torch.float16, torch.bfloat16) or z.dtype in (torch.float16, torch.bfloat16)
    four_dp = ToleranceClass("4 d.p.", 5e-5 + (float(bound.max()) if half else 0.0), 0.0)
    assert_close(p.double().cpu(), published, four_dp, "toy softmax vs the published 4-decimal values")
    within(p.unsqueeze(0), exact_softmax(z.unsqueeze(0), 1.0), bound.unsqueeze(0), "toy softmax vs exact")
    pos = {name: i for i, name in enumerate(names)}
    pd = p.double().cpu()
    within(pd[pos["runs"]], pd[pos["banana"]], 4 * u * pd[pos["banana"]] + tiny, "p(runs) vs p(banana) (tied logits)")
    ranking = ["quickly", "cat", "the", "runs", "blue"]
    for hi, lo in itertools.pairwise(ranking):
        check(bool(pd[pos[hi]] > pd[pos[lo]]), f"p({hi}) = {pd[pos[hi]]:.6f} is not above p({lo}) = {pd[pos[lo]]:.6f}")


@claim("OUT-3", "A tied model unembeds with exactly the transpose of its embedding table (U = E^T); an untied model "
                "holds its own U.", source="tokens-as-directions §3.2, \"Non-symmetric embeddings\"",
       needs=("embedding_matrix", "unembedding"), needs_any=("config", "tied_embeddings"), kind="exact",
       tolerance="exact: tying shares the weights, so U and E^T agree bit for bit",
       precise="'separate U' is made checkable as: U has shape [d, V] and differs from E^T (an untied model whose U "
               "happened to equal E^T would be indistinguishable from a tied one). The target's declaration "
               "(tied_embeddings, e.g. HF's tie_word_embeddings) or its config says which it claims to be, and where "
               "both are exposed they must agree; where the target can build models, freshly built tied and untied "
               "ones are checked too, and a built tied model that can be trained (train_step) must still unembed with "
               "E^T after one SGD step: tying is one matrix used twice (tokens-as-directions §3.2, 'simply given as "
               "the transpose'), so a copy of E^T, equal until it is trained, is not tied")
def out_3(target: Target, data: st.DataObject) -> None:
    """Declared tied (tied_embeddings or config) => unembedding()[0] == embedding_matrix().T exactly; untied => U is
    [d, V] and != E^T.
    With ``build``, the same holds for a model built from a drawn config with a drawn tied flag, and for a built tied
    model again after one train_step."""
    subjects = [target]
    if "build" in target.capabilities:
        tied = data.draw(st.booleans(), label="built_tied")
        cfg = data.draw(built_configs(target, max_layers=1, tied=tied), label="built_config")
        subjects.append(target.build(cfg, seed=data.draw(seeds, label="seed")))
    for subject in subjects:
        E = subject.embedding_matrix()
        U, _ = subject.unembedding()
        v, d = subject.vocab_size, (subject.config().d_model if "config" in subject.capabilities else E.shape[1])
        check(tuple(E.shape) == (v, d), f"{subject.name}: E has shape {tuple(E.shape)}, expected ({v}, {d})")
        check(tuple(U.shape) == (d, v), f"{subject.name}: U has shape {tuple(U.shape)}, expected ({d}, {v})")
        if _declares_tied(subject):
            assert_equal(U, E.T, f"{subject.name} (tied): U vs E^T")
        else:
            check(not torch.equal(U, E.T), f"{subject.name} claims an untied unembedding but U equals E^T exactly")
    built = subjects[-1]
    if len(subjects) > 1 and built.config().tied_embeddings and "train_step" in built.capabilities:
        v, n = built.vocab_size, built.config().max_positions
        ids = data.draw(token_ids(v, max_len=6, max_positions=n), label="train_ids").to(built.device)
        targets = data.draw(token_ids(v, min_len=ids.shape[1], max_len=ids.shape[1]), label="train_targets")
        built.train_step(ids, targets.to(built.device), lr=0.5)
        U, _ = built.unembedding()
        assert_equal(U, built.embedding_matrix().T, f"{built.name} (tied) after one train_step: U vs E^T")


def _declares_tied(target: Target) -> bool:
    """Whether the target says it is tied: its own declaration and its config, which must agree where both exist."""
    have = target.capabilities
    said = target.tied_embeddings() if "tied_embeddings" in have else None
    configured = target.config().tied_embeddings if "config" in have else None
    check(said is None or configured is None or said == configured,
          f"{target.name} declares tied_embeddings={said} but its config says tied_embeddings={configured}")
    return bool(said if said is not None else configured)


@claim("OUT-4", "Unembedding with the row-normalised transpose (row i of E over |E_i|^2) scores the embedded token "
                "exactly 1; with V <= d, the pseudo-inverse round trip returns the one-hot vector.",
       source="tokens-as-directions §1.2, §3.2", needs=("embedding_matrix",),
       illustration="linear algebra on the target's E (a row-normalised inverse, a pseudo-inverse the target never "
                    "computes): any table of independent, nonzero rows satisfies it, whatever the target computes",
       tolerance="float64 math on the target's E: the score within 4 (d + 2) u64 of 1 (two d-term dot products); "
                 "E_sub pinv(E_sub) within 10 (d + k) kappa u64 of the identity, kappa the condition number. Rows of "
                 "E that are exactly zero or repeat another row bit for bit are set aside before anything is drawn "
                 "and reported as notes",
       precise="a row that is exactly zero (a padding row) has no row-normalised inverse, and rows that repeat one "
               "another bit for bit can never be told apart: both are facts about the weights, found by scanning "
               "every row of E (not only the drawn ones, so the verdict cannot depend on the draw), set aside and "
               "named in the notes; the property draws its tokens from the other rows, and fails when fewer than two "
               "are left. The pseudo-inverse part needs V <= d, which real tables do not meet: it draws k <= min(d, "
               "16) distinct tokens and uses their rows E_sub [k, d] as the table; the round trip onehot(t) E_sub "
               "pinv(E_sub) == onehot(t) then holds iff those rows are linearly independent (dependent rows that are "
               "not exact repeats, e.g. one row a multiple of another, are reported as a failure)")
def out_4(target: Target, data: st.DataObject) -> None:
    """Rows of E neither exactly zero nor repeated (the rest are set aside and noted): for drawn such tokens t,
    (E_t / |E_t|^2) . E_t == 1; for k <= d distinct drawn such tokens with rows E_sub [k, d]: E_sub pinv(E_sub) ==
    I_k, so every one-hot vector makes the round trip."""
    E = target.embedding_matrix()
    d = int(E.shape[1])
    keep = checkable_rows(E, "E")
    for t in data.draw(st.lists(_drawn_row(keep), min_size=1, max_size=8), label="tokens"):
        row = E[t].detach().double().cpu()
        n2 = float(row @ row)
        check(n2 > 0, f"row {t} of E is zero: it has no row-normalised inverse")
        score = (row / n2) @ row
        within(score, torch.tensor(1.0, dtype=torch.float64), torch.tensor(_dot_bound(d)),
               f"row-normalised transpose score of token {t}")
    k_max = min(d, int(keep.sum()), 16)
    sub_ids = data.draw(st.lists(_drawn_row(keep), min_size=1, max_size=k_max, unique=True), label="sub_vocab")
    E_sub = E[sub_ids].detach().double().cpu()  # [k, d]
    k = len(sub_ids)
    sv = torch.linalg.svdvals(E_sub)
    check(float(sv.min()) > float(sv.max()) * 1e3 * (d + k) * _U64,
          f"rows {sub_ids} of E are linearly dependent (singular values {sv.tolist()}): no left inverse exists")
    kappa = float(sv.max() / sv.min())
    P = torch.linalg.pinv(E_sub)  # [d, k]
    within(E_sub @ P, torch.eye(k, dtype=torch.float64), torch.tensor(10 * (d + k) * kappa * _U64),
           f"onehot(t) E_sub pinv(E_sub) vs onehot(t) for the sub-vocabulary {sub_ids} (kappa {kappa:.3g})")


@claim("OUT-5", "With a tied unembedding, embed-then-unembed returns the token by argmax whenever all rows of E have "
                "equal norm; with unequal norms a longer row can win, and the property exhibits such a case.",
       source="tokens-as-directions \"Directions in space\", \"The effect of vector length\"",
       needs=("embedding_matrix",),
       illustration="geometry of the target's E (scores E_t . E_j computed here, not by the target's read-out): any "
                    "table with distinct directions satisfies it; OUT-3 checks that a tied target reads out with E",
       tolerance="float64 math on the target's E: scores and norms compared within 4 (d + 2) u64 relative (rounding "
                 "of d-term dot products). Rows of E that are exactly zero or repeat another row bit for bit are set "
                 "aside from the table and reported as notes",
       precise="equal norms make E_t . E_j = c^2 cos(theta) <= c^2 = E_t . E_t, so t wins unless another row points "
               "in exactly the same direction. A row that is exactly zero (a padding row) has no direction to "
               "rescale, and tokens whose rows repeat bit for bit (e.g. special tokens never seen in training) share "
               "one direction by construction: both are facts about the weights, found by scanning every row of E, "
               "set aside (neither drawn nor scored) and named in the notes; the claim holds on the table of the "
               "other rows, and fails when fewer than two are left. Among those, two rows pointing the same way "
               "(one a positive multiple of the other) are reported as a failure. "
               "On the target's unnormalised E, a failure of recovery is always explained by a longer row: "
               "E_t . E_j > |E_t|^2 forces |E_j| > |E_t|. The counterexample is made explicit twice: rows [1, 0] and "
               "[2, 1], and the target's table with row j replaced by lambda |E_t| (cos theta e_t + sin theta w), "
               "lambda cos theta > 1")
def out_5(target: Target, data: st.DataObject) -> None:
    """On the rows of E neither exactly zero nor repeated (the rest set aside and noted): (a) rescaled to equal norm,
    for drawn t, E_t . E_t exceeds every other E_t . E_j, so argmax is t; (b) as they are, argmax_j E_t . E_j != t
    implies |E_j| > |E_t|; (c) explicit counterexamples where a longer row wins, which equal-norm rescaling repairs."""
    E = target.embedding_matrix()
    v, d = E.shape
    check(v == target.vocab_size, f"E has {v} rows, the vocabulary {target.vocab_size}")
    rel = _dot_bound(d)
    keep = checkable_rows(E, "E")
    norms = _row_norms(E)
    tokens = data.draw(st.lists(_drawn_row(keep), min_size=1, max_size=8), label="tokens")
    rows = E[tokens].detach().double().cpu()
    unit = rows / rows.norm(dim=1, keepdim=True)
    cos = torch.cat([unit @ (c.detach().double().cpu() / n[:, None]).T
                     for c, n in zip(E.split(_CHUNK), norms.split(_CHUNK), strict=True)], dim=1)  # [k, V]
    cos = torch.where(keep, cos, -math.inf)  # rows set aside take no part (a zero row's cosine is 0 / 0)
    for r, t in enumerate(tokens):
        others = torch.cat([cos[r, :t], cos[r, t + 1:]])
        j = int(others.argmax()) + (1 if int(others.argmax()) >= t else 0)
        check(float(cos[r, j]) < float(cos[r, t]) - 2 * rel,
              f"with equal norms token {t} is not recovered: row {j} points the same way (cos {float(cos[r, j]):.17g})")
        check(int(cos[r].argmax()) == t, f"equal-norm recovery of token {t} gives {int(cos[r].argmax())}")
    raw = torch.where(keep, _scores(rows, E), -math.inf)  # [k, V]
    for r, t in enumerate(tokens):
        j = int(raw[r].argmax())
        if j != t and float(raw[r, j]) > float(raw[r, t]) * (1 + rel):
            check(float(norms[j]) > float(norms[t]) * (1 - rel),
                  f"token {t} lost to {j} although |E_{j}| = {float(norms[j]):.6g} <= |E_{t}| = {float(norms[t]):.6g}")
    small = torch.tensor([[1.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
    check(int((small[0] @ small.T).argmax()) == 1, "2-D counterexample: token 0 should lose to the longer row 1")
    small_n = small / small.norm(dim=1, keepdim=True)
    check(int((small_n[0] @ small_n.T).argmax()) == 0, "2-D counterexample: equal norms should recover token 0")
    t = tokens[0]
    j = data.draw(st.integers(0, v - 2), label="longer_row")
    j = j + 1 if j >= t else j
    theta = data.draw(st.floats(0.05, 1.2), label="theta")
    lam = data.draw(st.floats(1.05, 3.0), label="lambda_cos") / math.cos(theta)
    e_t = E[t].detach().double().cpu()
    g = torch.Generator().manual_seed(data.draw(seeds, label="w_seed"))
    w = torch.randn(d, generator=g, dtype=torch.float64)
    w = w - (w @ e_t) / (e_t @ e_t) * e_t
    if d < 2 or float(w.norm()) == 0:
        return
    new_row = lam * e_t.norm() * (math.cos(theta) * e_t / e_t.norm() + math.sin(theta) * w / w.norm())
    parts = [E[:j].detach().double().cpu(), new_row[None], E[j + 1:].detach().double().cpu()]
    in_table = keep.clone()
    in_table[j] = True  # row j is replaced by the new row, whatever it was
    scores = torch.where(in_table, torch.cat([e_t[None] @ part.T for part in parts], dim=1)[0], -math.inf)
    check(int(scores.argmax()) != t,
          f"counterexample: row {j} made longer (lambda cos theta = {lam * math.cos(theta):.3g}) should beat token {t}")
    unit_t = e_t / e_t.norm()
    cosines = torch.cat([unit_t[None] @ (part / part.norm(dim=1, keepdim=True)).T for part in parts], dim=1)[0]
    cosines = torch.where(in_table, cosines, -math.inf)
    check(int(cosines.argmax()) == t, f"counterexample table rescaled to equal norms should recover token {t}, "
                                      f"got {int(cosines.argmax())}")


@claim("OUT-6", "Logits measure alignment, not Euclidean closeness: the top dot product h . U_i and the nearest U_i "
                "can differ, and they agree whenever all U_i have equal norm.",
       source="tokens-as-directions Part 2", needs=("unembedding",),
       illustration="geometry of the target's U (dot products and distances computed here): any matrix satisfies it; "
                    "OUT-1 checks that the target's logits are h . U",
       tolerance="float64 math on the target's U: compared within 4 (d + 2) u64 (|h| + 1)^2 (rounding of d-term dot "
                 "products and squared distances). Columns of U that are exactly zero or repeat another column bit "
                 "for bit are set aside and reported as notes",
       precise="|h - u|^2 = |h|^2 + |u|^2 - 2 h . u, so with equal |u| the largest dot product is the nearest column; "
               "the property checks the value at each side's choice (not the index, which ties may swap). A column "
               "that is exactly zero (a tied padding row) cannot be rescaled to the common norm, and columns that "
               "repeat bit for bit are one vector under several IDs: both are facts about the weights, found by "
               "scanning every column of U, set aside (neither drawn nor compared) and named in the notes; the "
               "claim holds on the other columns, and fails when fewer than two are left. The difference is "
               "exhibited twice: h = [1, 0] against columns [1, 0] and [3, 3], and on the target's U with h = U_t "
               "and an extra column 2 U_t. The bias of the target, if any, is not part of this claim")
def out_6(target: Target, data: st.DataObject) -> None:
    """Columns of U neither exactly zero nor repeated (the rest set aside and noted), rescaled to a drawn common norm
    c: for drawn h, the column with the largest h . U_i is also the nearest one (up to rounding); h = [1, 0] with
    columns [1, 0], [3, 3] and h = U_t with an extra column 2 U_t separate the two."""
    U, _ = target.unembedding()
    check(U.dim() == 2 and U.shape[1] == target.vocab_size,
          f"U has shape {tuple(U.shape)}, expected [d, V] with V = {target.vocab_size}")
    d_model = _width_of(target)
    check(d_model is None or U.shape[0] == d_model, f"U has {U.shape[0]} rows, d_model is {d_model}")
    d = int(U.shape[0])
    keep = checkable_rows(U.T, "U", "columns")
    c = data.draw(st.floats(0.1, 10.0), label="common_norm")
    g = torch.Generator().manual_seed(data.draw(seeds, label="h_seed"))
    h = torch.randn(d, generator=g, dtype=torch.float64) * data.draw(st.floats(0.01, 10.0), label="h_scale")
    dots_, dist2_ = [], []
    for chunk in U.T.split(_CHUNK):  # columns [n, d], in float64 a block at a time (never the whole U)
        cols = chunk.detach().double().cpu()
        unit = cols / cols.norm(dim=1, keepdim=True) * c
        dots_.append(unit @ h)
        dist2_.append(((unit - h) ** 2).sum(dim=1))
    dots = torch.where(keep, torch.cat(dots_), -math.inf)  # columns set aside take no part (a zero one is 0 / 0)
    dist2 = torch.where(keep, torch.cat(dist2_), math.inf)
    i_dot, i_near = int(dots.argmax()), int(dist2.argmin())
    slack = _dot_bound(d) * (float(h.norm()) + c + 1) ** 2
    check(float(dots[i_near]) >= float(dots[i_dot]) - slack,
          f"equal norms: nearest column {i_near} has h . U = {float(dots[i_near]):.10g} "
          f"< max {float(dots[i_dot]):.10g}")
    check(float(dist2[i_dot]) <= float(dist2[i_near]) + 2 * slack,
          f"equal norms: top column {i_dot} is at |h - U|^2 = {float(dist2[i_dot]):.10g}, nearest "
          f"{float(dist2[i_near]):.10g}")
    h2 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    cols2 = torch.tensor([[1.0, 0.0], [3.0, 3.0]], dtype=torch.float64)
    check(int((cols2 @ h2).argmax()) == 1 and int(((cols2 - h2) ** 2).sum(dim=1).argmin()) == 0,
          "2-D example: the top dot product (column 1) and the nearest column (0) should differ")
    t = data.draw(_drawn_row(keep), label="column")
    h3 = U.T[t].detach().double().cpu()
    twice = 2 * h3  # the extra column 2 U_t, appended after the V columns of U
    near_, dots3_ = [((twice - h3) ** 2).sum()[None]], [(twice @ h3)[None]]
    for chunk in U.T.split(_CHUNK):  # one float64 block of columns at a time
        b = chunk.detach().double().cpu()
        near_.insert(-1, ((b - h3) ** 2).sum(dim=1))
        dots3_.insert(-1, b @ h3)
    near, dots3 = torch.cat(near_), torch.cat(dots3_)
    top = int(torch.where(torch.cat([keep, torch.ones(1, dtype=torch.bool)]), dots3, -math.inf).argmax())
    check(top != t, f"with an extra column 2 U_{t}, h = U_{t} should have a larger dot product elsewhere")
    check(float(near[t]) == 0.0, f"h = U_{t} is at distance {float(near[t])} from U_{t}")
    check(float(near[top]) > 0.0, f"the top-dot column {top} should not be where h is")


@claim("OUT-7", "One pass over n tokens gives n next-token distributions: the one at position i predicts token i + 1 "
                "from tokens 0..i alone, and only the last one chooses the next token.",
       source="tokens-as-directions §3 side note; what-happens-next step 5", needs=(),
       tolerance="the target's tolerance class: a position's logits in the full pass and in the pass over its prefix "
                 "are the same sums computed in batches of different shapes",
       precise="'position i predicts token i + 1' is made checkable as: logits [B, n, V], and logits[:, i] equals the "
               "last-position logits of the prefix ids[:, :i + 1], so they cannot depend on tokens after i. 'Only the "
               "last chooses' is checked where the target exposes generate: the appended greedy token maximises "
               "logits[:, -1] (up to the tolerance, for near ties)")
def out_7(target: Target, data: st.DataObject) -> None:
    """For drawn ids [B, n]: logits(ids) has shape [B, n, V] and logits(ids)[:, i] == logits(ids[:, :i+1])[:, -1]
    for every i; with ``generate``, generate(ids, 1) keeps ids and appends a token whose logit at position n - 1 is
    maximal."""
    tol = CLASSES[target.tolerance]
    b = data.draw(st.integers(1, 2), label="batch")
    ids = data.draw(target_ids(target, max_len=10, batch=b), label="ids")
    n = ids.shape[1]
    z = target.logits(ids)
    check(tuple(z.shape) == (b, n, target.vocab_size),
          f"logits shape {tuple(z.shape)}, expected ({b}, {n}, {target.vocab_size})")
    for i in range(n):
        prefix = target.logits(ids[:, :i + 1])
        assert_logits_close(z[:, i], prefix[:, -1], tol,
                            f"logits at position {i} vs last logits of the prefix of length {i + 1}")
    if "generate" in target.capabilities:
        out = target.generate(ids, 1)
        assert_equal(out[:, :n], ids, "generate keeps the prompt")
        last = z[:, -1].double().cpu()
        chosen = last.gather(-1, out[:, n:n + 1].cpu()).flatten()
        top = last.amax(dim=-1)
        slack = tol.atol + tol.rtol * top.abs()
        check(bool((chosen >= top - 2 * slack).all()),
              f"generated token logits {chosen.tolist()} are not the maxima {top.tolist()} of the last position")

"""MEMIT's keys and target values (spec baselines.md §3; `memit/compute_ks.py`, `memit/compute_z.py`), shared by
MEMIT and AlphaEdit (`mass_edit.py` runs the layer loop).

Prompts. A record's prompt already holds its subject. Each context template (a group list: `[["{}"], [5 sampled
templates]]`) is formatted with it; the subject's last token is found from character offsets, searching from
where the prompt part starts (a generated prefix may contain the subject's words). A record whose subject is
empty or not in its prompt falls back to the last prompt token (`fallback`, counted) or is an error.

Keys: the edited module's input at that token, averaged within each template group and then across the groups:
with `[["{}"], five generations]` the bare prompt weighs ½ and each generation 1/10 (the reference).

compute_z: δ ∈ R^{d_model} added to decoder layer L's output at the subject token of every prompt
(templates + target tokens but the last, plus the KL prompt "{subject} is a"), right-padded (M2), targets
without BOS (M1). Loss = NLL through layer `v_loss_layer` → final norm → LM head (summed over the target tokens
and divided by their count, averaged over prompts) + kl_factor·KL(P_now ‖ P_init) at the KL prompt's subject
token + v_weight_decay·‖δ‖/‖h_init‖² (M3: the norm, not its square; `faithful_weight_decay: false` squares it). Adam; stop below 5e-2; the last iteration
takes no step; after each step ‖δ‖ ≤ clamp_norm_factor·‖h_init‖. z = h_init + δ.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ...core.errors import LifelongError
from ...core.records import EditRecord
from ...models.families import Family
from ...models.modules import get_module, layer_of
from ...models.tokenization import IGNORE, encode_pair, pad, pad_id
from .hooks import capture, stop_before
from .subjects import subject_last_token

STOP_LOSS = 5e-2       # compute_z stops below this loss (the reference's constant)
KL_PROMPT = "{} is a"
ROWS_PER_PASS = 128    # rows per forward pass when reading keys (the reference's batch)


def fill_template(template: str, prompt: str) -> tuple[str, int]:
    """(the template with `prompt` in its one "{}", the character offset where the prompt starts)."""
    if template.count("{}") != 1:
        raise LifelongError(f"context template {template!r} must hold exactly one '{{}}'")
    prefix, suffix = template.split("{}")
    return prefix + prompt + suffix, len(prefix)


@dataclass
class KeyRows:
    """The prompts keys are read from: every record under every template, record-major."""

    ids: list[list[int]]
    positions: list[int]        # the subject's last token in each row
    weights: torch.Tensor       # [n_records·n_templates]: group-mean weights (½, 1/10, ...) per row
    n_templates: int
    fallbacks: int              # records whose subject was missing or absent

    @property
    def n_records(self) -> int:
        return len(self.ids) // self.n_templates


def locate(tokenizer, text: str, subject: str, start: int, on_missing: str, what: str) -> tuple[int, bool]:
    pos, found = subject_last_token(tokenizer, text, subject, start)
    if not found and on_missing == "error":
        raise LifelongError(f"the subject {subject!r} does not occur in {what} {text!r} "
                            "(missing_subject: error; `fallback` uses the last prompt token)")
    return pos, found


def key_rows(tokenizer, records: Sequence[EditRecord], groups: Sequence[Sequence[str]], on_missing: str) -> KeyRows:
    flat = [t for group in groups for t in group]
    per_template = torch.tensor([1.0 / (len(groups) * len(g)) for g in groups for _ in g])
    ids, positions, fallbacks = [], [], 0
    for record in records:
        missing = False
        for template in flat:
            text, start = fill_template(template, record.prompt)
            pos, found = locate(tokenizer, text, record.subject, start, on_missing, "the prompt")
            ids.append(tokenizer(text)["input_ids"])
            positions.append(pos)
            missing |= not found
        fallbacks += int(missing)
    return KeyRows(ids, positions, per_template.repeat(len(records)), len(flat), fallbacks)


def decoder_output(output):
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def read_keys(model, tokenizer, family: Family, rows: KeyRows, paths: Sequence[str],
              z_layer: int | None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Per record, the group-averaged fp32 input of each module in `paths` ([n_records, d_in]), and (with
    `z_layer`) decoder layer z_layer's output at the subject token of the bare prompt ([n_records, d_model])."""
    layers = get_module(model, family.layers)
    watched = {p: get_module(model, p) for p in paths}
    if z_layer is not None:
        watched["<z>"] = layers[z_layer]
    top = max([layer_of(model, p) for p in paths] + ([z_layer] if z_layer is not None else []))
    stop_at = layers[top + 1] if top + 1 < len(layers) else get_module(model, family.final_norm)
    device = next(model.parameters()).device
    found: dict[str, list[torch.Tensor]] = {p: [] for p in watched}
    for start in range(0, len(rows.ids), ROWS_PER_PASS):
        ids, mask = pad(rows.ids[start:start + ROWS_PER_PASS], pad_id(tokenizer))
        pos = torch.tensor(rows.positions[start:start + ROWS_PER_PASS], device=device)
        with capture(watched) as seen, stop_before(stop_at):
            model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        at = torch.arange(len(pos), device=device)
        for path in paths:
            found[path].append(seen[path][0][at, pos].float())
        if z_layer is not None:
            found["<z>"].append(decoder_output(seen["<z>"][1])[at, pos].detach().float())
    keys = {}
    weights = rows.weights.to(device)[:, None]
    for path in paths:
        rows_k = torch.cat(found[path]) * weights                       # [n_records·n_templates, d_in]
        keys[path] = rows_k.view(rows.n_records, rows.n_templates, -1).sum(1)
    z = None
    if z_layer is not None:     # template 0 is the bare prompt "{}"
        z = torch.cat(found["<z>"]).view(rows.n_records, rows.n_templates, -1)[:, 0]
    return keys, z


@dataclass
class ZResult:
    z: torch.Tensor             # [d_model] fp32
    loss: float
    iterations: int
    delta_ratio: float          # ‖δ‖ / ‖h_init‖
    clamp_hits: int
    h_init: torch.Tensor        # [d_model] fp32, z = h_init + δ


def compute_z(model, tokenizer, family: Family, record: EditRecord, templates: Sequence[str], hp, z_layer: int,
              loss_layer: int, on_missing: str) -> ZResult:
    """MEMIT's target value for one record at decoder layer `z_layer` (see the module docstring)."""
    filled = [fill_template(t, record.prompt) for t in templates]
    encoded = [encode_pair(tokenizer, text, record.target) for text, _ in filled]   # no BOS in the target (M1)
    n_targets = sum(1 for label in encoded[0].labels if label != IGNORE)
    positions = [locate(tokenizer, text, record.subject, start, on_missing, "the prompt")[0] for text, start in filled]
    kl_text = KL_PROMPT.format(record.subject)
    positions.append(subject_last_token(tokenizer, kl_text, record.subject)[0])
    device = next(model.parameters()).device
    rows = [e.input_ids for e in encoded] + [tokenizer(kl_text)["input_ids"]]
    ids, mask = pad(rows, pad_id(tokenizer))                            # right padding (M2)
    labels, _ = pad([e.labels for e in encoded], IGNORE, width=ids.shape[1])
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
    at, pos = torch.arange(len(rows), device=device), torch.tensor(positions, device=device)
    n_rw, kl_row = len(encoded), len(rows) - 1
    target = labels[:n_rw] != IGNORE

    layers = get_module(model, family.layers)
    body, norm, head = (get_module(model, p) for p in (family.body, family.final_norm, family.lm_head))
    delta = torch.zeros(model.config.hidden_size, device=device, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hp.v_lr)
    seen: dict[str, torch.Tensor] = {}

    def add_delta(module, args, output):
        out = decoder_output(output)
        if "h_init" not in seen:
            seen["h_init"] = out[0, pos[0]].detach().float().clone()
        add = torch.zeros_like(out).index_put((at, pos), delta.to(out.dtype).expand(len(rows), -1))
        out = out + add
        if loss_layer == z_layer:
            seen["loss_out"] = out
        return (out, *output[1:]) if isinstance(output, tuple) else out

    def keep(module, args, output):
        seen["loss_out"] = decoder_output(output)

    handles = [layers[z_layer].register_forward_hook(add_delta)]
    if loss_layer != z_layer:
        handles.append(layers[loss_layer].register_forward_hook(keep))
    kl_init, hits, it, loss = None, 0, 0, None
    try:
        for it in range(hp.v_num_grad_steps):
            final = body(input_ids=ids, attention_mask=mask, use_cache=False)[0]
            kl_logp = F.log_softmax(head(final[kl_row, pos[kl_row]]).float(), -1)
            if kl_init is None:
                kl_init = kl_logp.detach().clone()
            rep = seen["loss_out"][:n_rw][target]                          # [n target tokens over prompts, d]
            logp = F.log_softmax(head(norm(rep)).float(), -1)
            picked = torch.zeros(target.shape, device=device).masked_scatter(
                target, logp.gather(1, labels[:n_rw][target][:, None])[:, 0])
            nll = (-picked.sum(1) / n_targets).mean()
            kl = hp.kl_factor * F.kl_div(kl_init[None], kl_logp[None], log_target=True, reduction="batchmean")
            h_norm = seen["h_init"].norm()
            shift = delta.norm() if hp.faithful_weight_decay else delta.norm() ** 2
            wd = hp.v_weight_decay * (shift / h_norm ** 2)                  # M3: ‖δ‖ (the code), or ‖δ‖²
            loss = nll + kl + wd
            if not torch.isfinite(loss):
                raise LifelongError(f"compute_z: the loss is {float(loss.detach())} for {record.prompt!r} -> {record.target!r}")
            if float(loss.detach()) < STOP_LOSS or it == hp.v_num_grad_steps - 1:
                break
            (grad,) = torch.autograd.grad(loss, [delta])
            delta.grad = grad
            opt.step()
            with torch.no_grad():
                max_norm = hp.clamp_norm_factor * h_norm
                if delta.norm() > max_norm:
                    delta.mul_(max_norm / delta.norm())
                    hits += 1
    finally:
        for handle in handles:
            handle.remove()
    h_init = seen["h_init"]
    return ZResult(h_init + delta.detach(), float(loss.detach()), it + 1, float(delta.detach().norm() / h_init.norm()), hits,
                   h_init)

"""An edited model on disk, for any editor: the model as `save_pretrained` writes it, plus the editor's state.

    config.json, model.safetensors, tokenizer files   `save_pretrained` (WeightEditor: the edited weights;
                                                     AdapterEditor: the untouched base weights)
    editor.json          format, editor name, hyperparameters, the base model's fingerprint and config,
                         the editor's report, and the JSON skeleton of its state
    editor.safetensors   the tensors of the editor's state (side memories, normalizer statistics,
                         original weights of edited modules, RNG states)

`load_edited(dir)` brings back (editor, model, tokenizer) that behave exactly as the saved ones did;
`load_edited(dir, model=base, tokenizer=tok)` puts the saved edits onto a model already in memory and
refuses one whose config differs, naming the keys. Nothing is unpickled: tensors and JSON only.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from safetensors.torch import load_file, save_file

from ..core import state as tree
from ..core.config import fill
from ..core.errors import LifelongError
from ..core.io import atomic_write, read_json, write_json
from ..models.loading import config_dict, config_diff, fingerprint, load_model
from ..models.modules import family_of
from . import editor_class
from .base import EditContext, Editor

FORMAT = "lifelong-edited/1"


def save_edited(editor: Editor, directory: str | Path, *, with_model: bool = True) -> Path:
    """Write the edited model (unless `with_model` is false) and the editor's state to `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if with_model:
        editor.model.save_pretrained(directory)
        editor.tokenizer.save_pretrained(directory)
    skeleton, tensors = tree.split(editor.artifact_state())
    atomic_write(directory / "editor.safetensors", lambda p: save_file(tensors, str(p)))
    write_json(directory / "editor.json", {
        "format": FORMAT, "editor": editor.name, "fingerprint": fingerprint(editor.model),
        "base_config": config_dict(editor.model), "hparams": asdict(editor.hparams), "edits_done": editor.edits_done,
        "report": editor.report(), "state": skeleton})
    return directory


def load_edited(directory: str | Path, *, model=None, tokenizer=None, context: EditContext | None = None,
                device: str = "cpu") -> Editor:
    """The editor saved in `directory`, on the model saved with it or on `model` (same config)."""
    directory = Path(directory)
    if not (directory / "editor.json").exists():
        raise LifelongError(f"{directory}: not a saved edited model (no editor.json); save one with "
                            "`python -m lifelong run ... --save-model DIR`")
    meta = read_json(directory / "editor.json")
    if meta.get("format") != FORMAT:
        raise LifelongError(f"{directory}/editor.json: unsupported format {meta.get('format')!r}; expected {FORMAT}")
    if model is None:
        if not (directory / "config.json").exists():
            raise LifelongError(f"{directory} holds the editor's state only (saved with_model=False); "
                                "pass the base model: load_edited(dir, model=..., tokenizer=...)")
        model, tokenizer = load_model(str(directory), device=device)
    fp = fingerprint(model)
    if meta["fingerprint"] != fp:
        raise LifelongError(f"{directory} was saved on base model {meta['fingerprint']}, this model is {fp}; "
                            f"config differences: {config_diff(meta.get('base_config', {}), config_dict(model))}")
    cls = editor_class(meta["editor"])
    hparams = fill(cls.hparams_class, meta["hparams"], where=f"{directory}/editor.json hparams")
    context = context or EditContext(family=family_of(model), device=next(model.parameters()).device,
                                     model_fingerprint=fp)
    editor = cls(model, tokenizer, hparams, context)
    tensors = load_file(str(directory / "editor.safetensors"), device="cpu")
    editor.load_artifact_state(tree.join(meta["state"], tensors))
    return editor

"""The editor registry: name -> "module:Class". A new editor is one package in this folder plus one line here.

The name is also the editor's package (`lifelong/editors/NAME/`, checked by a test), which is what the
pipeline's stages depend on. This file is deliberately not a dependency of those stages: adding a line
here must not rerun the other editors' results, and a line can only point into its own package.
Classes are imported lazily, so one broken editor never breaks the others.
"""
EDITORS: dict[str, str] = {
    "ft": "lifelong.editors.ft:FTEditor",
    "ft_l": "lifelong.editors.ft_l:FTLEditor",
    "memit": "lifelong.editors.memit:MemitEditor",
    "alphaedit": "lifelong.editors.alphaedit:AlphaEditor",
    "grace": "lifelong.editors.grace:GraceEditor",
    "ultraedit": "lifelong.editors.ultraedit:UltraEditor",
    "wise": "lifelong.editors.wise:WiseEditor",
}

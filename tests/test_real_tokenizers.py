"""The (prompt, answer) convention on the real GPT-2, LLaMA and Mistral-v0.3 tokenizers, and the lone "▁".

Files: ../shared/data/tokenizers/{gpt2/vocab.json+merges.txt, llama/tokenizer.model,
mistral-v0.3/tokenizer.json}; each test skips, naming the missing file, when they are absent.
LLaMA: transformers' own SentencePiece conversion needs `protobuf` (not installed), so the test
builds the HF tokenizer from the SentencePiece vocabulary (`generate_merges`), and checks it against
`sentencepiece` itself on the prompts.

Convention (tokenization.py, spec ultraedit.md §3.6): P = tok(prompt) (BOS if the tokenizer adds
one: GPT-2 none, LLaMA and Mistral <s>), A = tok(" " + answer, add_special_tokens=False),
input_ids = P + A[:-1], labels = [-100]*(|P|-1) + A.

Lone "▁" (spec §1.10 k), measured on the real ZsRE edit set (1,037 rows, zsre_mend_edit.json):
* Mistral v0.3 tokenizer.json (Metaspace, prepend_scheme "first", legacy false) and the HF LLaMA
  tokenizer built the same way: " Paris" -> ["▁Paris"], but " 2006" -> ["▁", "2", "0", "0", "6"]
  (digits are single pieces, there is no "▁2"). The first piece of " " + answer is whitespace only
  EXACTLY for answers that start with a digit or with whitespace: alt 185/1037 (17.8%: 170
  digit-initial, 15 with a leading space in the file; 184 get exactly "▁", " 503-542" gets "▁▁"),
  answers[0] 164/1037 (15.8%, all digit-initial), loc_ans 132/1037 (12.7%); CounterFact target_new
  0/10,000 (no digit-initial targets).
* Raw SentencePiece (and so a legacy-mode LLaMA tokenizer; dummy prefix + " " gives "▁▁"): the
  first piece of " " + answer is pure space for 1037/1037 answers ("▁" before "▁Paris", or the
  merged piece "▁▁" before a digit).
* GPT-2: lone "Ġ" for 16/1037 alts (15 have a leading space in the file, plus " iddy-chair
  cancer"), 0/1037 answers[0].
Decision: keep the reference behaviour by default, `answer_ids(..., drop_lone_space=False)`: the lone
piece is an answer token in editing and in the metrics, as in the UltraEdit authors' code, so our
numbers stay comparable with theirs. It makes the first answer token of digit-initial answers
easy to predict on Mistral (~16% of ZsRE answers), which inflates token accuracy slightly;
`drop_lone_space: true` is the documented deviation. Note that its check matches a piece that is
exactly "▁"/"Ġ", not the legacy "▁▁" piece.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lifelong.models.tokenization import IGNORE, answer_ids, encode_pair

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TOKENIZERS = SHARED_DATA / "tokenizers"
ZSRE = SHARED_DATA / "zsre" / "zsre_mend_edit.json"


def need(*paths: Path) -> None:
    for p in paths:
        if not p.is_file():
            pytest.skip(f"{p} not present (real tokenizer/data files: see ../shared/data/README.md)")


@pytest.fixture(scope="module")
def gpt2():
    need(TOKENIZERS / "gpt2" / "vocab.json", TOKENIZERS / "gpt2" / "merges.txt")
    from transformers import GPT2Tokenizer
    return GPT2Tokenizer.from_pretrained(str(TOKENIZERS / "gpt2"))


@pytest.fixture(scope="module")
def sentencepiece_llama():
    need(TOKENIZERS / "llama" / "tokenizer.model")
    import sentencepiece as spm
    return spm.SentencePieceProcessor(model_file=str(TOKENIZERS / "llama" / "tokenizer.model"))


@pytest.fixture(scope="module")
def llama(sentencepiece_llama):
    from transformers import LlamaTokenizer
    from transformers.tokenization_utils_base import generate_merges
    sp = sentencepiece_llama
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    return LlamaTokenizer(vocab=vocab, merges=generate_merges(vocab), add_bos_token=True)


@pytest.fixture(scope="module")
def mistral():
    need(TOKENIZERS / "mistral-v0.3" / "tokenizer.json", TOKENIZERS / "mistral-v0.3" / "tokenizer_config.json")
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(TOKENIZERS / "mistral-v0.3"))


@pytest.fixture(scope="module")
def zsre() -> list[dict]:
    need(ZSRE)
    return json.loads(ZSRE.read_text())


def lone(tok, answer: str, mark: str) -> bool:
    """Is the first piece of " " + answer whitespace only ("▁", or "▁▁" when the data's answer itself
    starts with a space)?"""
    pieces = tok.convert_ids_to_tokens(tok(" " + answer, add_special_tokens=False)["input_ids"])
    return len(pieces) > 1 and set(pieces[0]) == {mark}


def check_convention(tok, prompt: str, answer: str, *, bos: int | None, mark: str) -> None:
    enc = encode_pair(tok, prompt, answer)
    p = tok(prompt)["input_ids"]
    a = answer_ids(tok, answer)
    assert enc.input_ids == p + a[:-1]
    assert enc.labels == [IGNORE] * (len(p) - 1) + a and len(enc.labels) == len(enc.input_ids)
    assert enc.labels[len(p) - 1] == a[0]           # the last prompt position predicts the first answer token
    if bos is None:
        assert tok.bos_token_id not in p or p[0] != tok.bos_token_id
        assert p == tok(prompt, add_special_tokens=False)["input_ids"]
    else:
        assert p[0] == bos and p.count(bos) == 1 and bos not in a
        assert p[1:] == tok(prompt, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(a[0]).startswith(mark)  # the prefixed space is in the first answer piece
    assert tok.decode(p + a, skip_special_tokens=True) == prompt + " " + answer


def test_gpt2_convention(gpt2, zsre):
    assert len(gpt2) == 50257 and gpt2("Paris")["input_ids"] == gpt2("Paris", add_special_tokens=False)["input_ids"]
    for row in zsre[:100]:
        check_convention(gpt2, row["src"], row["answers"][0], bos=None, mark="Ġ")
    assert gpt2.convert_ids_to_tokens(answer_ids(gpt2, "Paris")) == ["ĠParis"]


def test_llama_convention_and_agreement_with_sentencepiece(llama, sentencepiece_llama, zsre):
    sp = sentencepiece_llama
    assert len(llama) == sp.get_piece_size() == 32000 and llama.bos_token_id == sp.bos_id() == 1
    for row in zsre[:100]:
        assert llama(row["src"])["input_ids"] == [1] + sp.encode(row["src"])
        check_convention(llama, row["src"], row["answers"][0], bos=1, mark="▁")
    # the dummy-prefix difference: SentencePiece itself yields a lone "▁" before "▁Paris"
    assert sp.encode(" Paris", out_type=str) == ["▁", "▁Paris"]
    assert llama.convert_ids_to_tokens(answer_ids(llama, "Paris")) == ["▁Paris"]


def test_mistral_convention(mistral, zsre):
    assert len(mistral) == 32768 and mistral.bos_token_id == 1
    for row in zsre[:100]:
        check_convention(mistral, row["src"], row["answers"][0], bos=1, mark="▁")
    assert mistral.convert_ids_to_tokens(answer_ids(mistral, "2006")) == ["▁", "2", "0", "0", "6"]


def test_lone_space_piece_on_real_zsre_answers(gpt2, llama, sentencepiece_llama, mistral, zsre):
    alts = [r["alt"] for r in zsre]
    truths = [r["answers"][0] for r in zsre]
    expected = [a[:1].isdigit() or a[:1].isspace() for a in alts]
    for tok in (mistral, llama):
        found = [lone(tok, a, "▁") for a in alts]
        assert found == expected                  # exactly the digit- or space-initial answers
        assert sum(lone(tok, a, "▁") for a in truths) == sum(a[:1].isdigit() for a in truths) == 164
    assert sum(expected) == 185
    # legacy SentencePiece: the first piece of " " + answer is pure space for every answer
    sp = sentencepiece_llama
    assert all(set(sp.encode(" " + a, out_type=str)[0]) == {"▁"} for a in alts)
    # GPT-2: rare, and almost only where the file's answer itself starts with a space
    gpt2_lone = [a for a in alts if lone(gpt2, a, "Ġ")]
    assert len(gpt2_lone) == 16 and sum(a[:1].isspace() for a in gpt2_lone) == 15
    assert not any(lone(gpt2, a, "Ġ") for a in truths)
    exactly_lone = [a for a in alts if mistral.convert_ids_to_tokens(answer_ids(mistral, a))[0] == "▁"]
    assert len(exactly_lone) == 184  # " 503-542" gives the piece "▁▁" instead
    rates = {"mistral alt": sum(expected) / len(alts), "mistral answers[0]": 164 / len(truths),
             "gpt2 alt": len(gpt2_lone) / len(alts)}
    print("lone-space rates on ZsRE:", {k: f"{v:.1%}" for k, v in rates.items()})


def test_drop_lone_space_removes_exactly_that_piece(mistral):
    for answer in ("2006", "1998", "Paris", "Volkswagen Group"):
        kept = answer_ids(mistral, answer)
        dropped = answer_ids(mistral, answer, drop_lone_space=True)
        if answer[0].isdigit():
            assert mistral.convert_ids_to_tokens(kept[0]) == "▁" and dropped == kept[1:]
        else:
            assert dropped == kept
        assert mistral.decode(dropped).strip() == answer

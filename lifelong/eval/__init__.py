"""Evaluation: the metric registry (`registry.py`), teacher-forced scoring (`teacher_forced.py`), generation
and perplexity metrics (`generation.py`, `perplexity.py`), and streamed evaluation of edit records
(`evaluate.py`)."""

"""Clinical text, below the readers: normalisation and sections (:mod:`.sections`) and findings
in context, NegEx / ConText (:mod:`.context`). Pure Python; no medmm layer above is imported."""

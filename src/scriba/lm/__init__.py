"""Character language models in a codec's label space: building ARPA files (:mod:`scriba.lm.ngram`,
:mod:`scriba.lm.lmfile`) and CTC beam search with them (:mod:`scriba.lm.beam`, needs ``scriba[lm]``)."""

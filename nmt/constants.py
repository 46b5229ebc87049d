"""The names every layer shares: reserved ids, the word-boundary marker, the "never" log-probability.

TensorFlow-free and import-free, so that the tokenizer, the data pipeline, the graph code and the
TFLite reference decoder (which runs without TensorFlow) read one definition.
"""

# Reserved ids, the same in every vocabulary (the tokenizer trains SentencePiece with them).
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
NUM_SPECIAL = 4  # ids below this are reserved: no piece spells them
UNK_PIECE = "<spm-unk>"
MIN_VOCAB_SIZE = 8  # the reserved ids and a few pieces

WORD_START = "▁"  # SentencePiece's word-boundary marker (U+2581)

# A log-probability low enough to never be chosen, finite so that sums never turn into NaN.
LOG_ZERO = -1e9

# Vocabulary shortlists (nmt.shortlist): a batch's allowed targets are padded to a multiple of this
# (whole SIMD tiles in the output matmul); the defaults keep, as Marian's and Bergamot's do, the 100
# most frequent target pieces and the 50 likeliest translations of each source piece.
SHORTLIST_BLOCK = 64
DEFAULT_SHORTLIST_FIRST, DEFAULT_SHORTLIST_BEST = 100, 50

# Target languages written without spaces between words: a terminology phrase (nmt.constraints) is
# segmented as SentencePiece writes it inside a sentence there (no word-start marker), and as a word
# of its own (after a space) everywhere else.
UNSPACED_LANGUAGES = frozenset({"ja", "zh", "th", "lo", "km", "my", "bo"})

"""A WordPiece vocabulary learnt from the training captions, for models trained from scratch (BLIP, GIT).

The expert caption grammar uses a few hundred words, so a from-scratch model gets its own
small vocabulary instead of BERT's 30,522 entries: far fewer output logits to train. The
``tokenizers`` pipeline is BERT's (lowercasing normaliser, BERT pre-tokenizer, WordPiece
decoder), so decoded captions read like fine-tuned BLIP output ("a sill - type deformation
..."), and the result is wrapped as a ``BertTokenizerFast`` with BLIP's special tokens:
``[DEC]`` starts a caption, ``[SEP]`` ends it, ``[PAD]`` is id 0. GIT uses the same
vocabulary with BERT's convention instead: ``[CLS]`` starts a caption.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import BertTokenizerFast

PAD, UNK, CLS, SEP, MASK, DEC = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK, DEC)


def train_tokenizer(captions: Iterable[str], vocab_size: int, min_frequency: int = 1) -> BertTokenizerFast:
    """Learn a WordPiece vocabulary of at most ``vocab_size`` entries from ``captions``."""
    wordpiece = Tokenizer(models.WordPiece(unk_token=UNK))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS)
    )
    captions = list(captions)
    wordpiece.train_from_iterator(captions, trainer)
    # The trainer breaks ties between equally frequent pairs in hash order, so its
    # intermediate pieces (and all ids) change from run to run. Keeping the single
    # characters plus the pieces the captions actually split into (whole words, when the
    # vocabulary is big enough for merging to finish), numbered alphabetically after the
    # special tokens, makes a seeded training run repeatable.
    learnt = wordpiece.get_vocab()
    used = {token for caption in captions for token in wordpiece.encode(caption).tokens}
    used |= {token for token in learnt if len(token.removeprefix("##")) == 1}
    ordered = [*SPECIAL_TOKENS, *sorted(used - set(SPECIAL_TOKENS))]
    wordpiece.model = models.WordPiece({token: i for i, token in enumerate(ordered)}, unk_token=UNK)
    return BertTokenizerFast(
        tokenizer_object=wordpiece,
        unk_token=UNK,
        sep_token=SEP,
        pad_token=PAD,
        cls_token=CLS,
        mask_token=MASK,
        bos_token=DEC,
        clean_up_tokenization_spaces=True,
    )

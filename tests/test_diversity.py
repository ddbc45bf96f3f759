"""The collapse guard (`decpo.scoring.diversity`) on hand-worked texts: distinct-n, cross-prompt duplicates,
the most frequent continuations; one stock sentence for every prompt scores low, varied texts high."""

import pytest

from decpo.scoring.diversity import (
    cross_prompt_duplicates,
    distinct_n,
    distinct_n_leave_one_out,
    duplicate_share,
    most_frequent,
    ngrams,
    normalise,
    tokens,
)

STOCK = "I am sorry, I cannot help with that."
VARIED = [
    "the river rose after three days of rain",
    "she painted the fence a bright shade of green",
    "our train left the station two hours late",
    "a small dog barked at passing cyclists",
    "they argued about chess openings until midnight",
    "fresh bread cooled on every kitchen windowsill",
]


def test_tokens_are_lower_cased_whitespace_pieces():
    assert tokens("The cat,  the\tDOG") == ["the", "cat,", "the", "dog"]
    assert normalise("  The Cat\n sat ") == "the cat sat"
    assert ngrams("a b c", 2) == [("a", "b"), ("b", "c")]
    assert ngrams("a", 2) == []
    with pytest.raises(ValueError):
        ngrams("a b", 0)


def test_distinct_n_hand_worked():
    texts = ["the cat sat", "The cat ran", "a dog"]
    # unigrams: the cat sat the cat ran a dog -> 8 in all, 6 unique (the, cat, sat, ran, a, dog)
    assert distinct_n(texts, 1) == pytest.approx(6 / 8)
    # bigrams: (the cat) (cat sat) (the cat) (cat ran) (a dog) -> 5 in all, 4 unique
    assert distinct_n(texts, 2) == pytest.approx(4 / 5)
    # n-grams never span two texts: "b" + "c" would be a bigram only if the texts were joined
    assert distinct_n(["a b", "c d"], 2) == 1.0
    assert distinct_n(["", "x"], 2) == 0.0  # no bigram at all


def test_distinct_n_leave_one_out_equals_recomputing_without_each_text():
    texts = ["the cat sat", "The cat ran", "a dog", "", "the cat sat on a dog"] + VARIED
    for n in (1, 2, 3):
        naive = [distinct_n(texts[:i] + texts[i + 1 :], n) for i in range(len(texts))]
        assert distinct_n_leave_one_out(texts, n) == pytest.approx(naive)
    assert distinct_n_leave_one_out(["a b", ""], 2) == [0.0, 1.0]


def test_distinct_n_leave_one_prompt_out_equals_recomputing_without_its_samples():
    texts = ["the cat sat", "The cat ran", "a dog", "", "the cat sat on a dog"] + VARIED
    groups = [0, 0, 1, 2, 2, 1, 3, 3, 4, 4, 4]  # K samples per prompt, a prompt's samples not adjacent
    for n in (1, 2):
        naive = [
            distinct_n([t for t, g in zip(texts, groups, strict=True) if g != left], n) for left in range(5)
        ]
        assert distinct_n_leave_one_out(texts, n, groups) == pytest.approx(naive)
    assert distinct_n_leave_one_out(texts, 2, list(range(len(texts)))) == distinct_n_leave_one_out(texts, 2)
    with pytest.raises(ValueError):
        distinct_n_leave_one_out(["a"], 1, [0, 1])


def test_cross_prompt_duplicates_hand_worked():
    texts = ["Hello  there", "something else", "hello there", "unique"]
    assert cross_prompt_duplicates(texts) == [True, False, True, False]
    assert duplicate_share(texts) == 0.5
    # samples of one prompt (group 0) repeating each other are not cross-prompt duplicates
    assert cross_prompt_duplicates(["a b", "A b", "c"], groups=[0, 0, 1]) == [False, False, False]
    assert cross_prompt_duplicates(["a b", "c", "a b"], groups=[0, 0, 1]) == [True, False, True]
    assert duplicate_share([]) == 0.0
    with pytest.raises(ValueError):
        cross_prompt_duplicates(["a"], groups=[0, 1])


def test_most_frequent_counts_normalised_texts():
    texts = ["B", "a", "b ", "c", "A", "b", "d", "e", "f"]
    assert most_frequent(texts) == [("b", 3), ("a", 2), ("c", 1), ("d", 1), ("e", 1)]
    assert most_frequent(texts, k=1) == [("b", 3)]


def test_one_stock_sentence_for_every_prompt_is_flagged():
    stock = [STOCK] * 20
    assert duplicate_share(stock) == 1.0
    assert all(cross_prompt_duplicates(stock))
    # 8 tokens ("i" twice) repeated 20 times: 7 unique of 160 unigrams, 7 unique of 140 bigrams
    assert distinct_n(stock, 1) == pytest.approx(7 / 160)
    assert distinct_n(stock, 2) == pytest.approx(7 / 140)
    assert most_frequent(stock) == [(normalise(STOCK), 20)]


def test_varied_texts_are_not_flagged():
    assert duplicate_share(VARIED) == 0.0
    assert distinct_n(VARIED, 2) == 1.0
    assert distinct_n(VARIED, 1) > 0.8
    assert [count for _, count in most_frequent(VARIED)] == [1] * 5

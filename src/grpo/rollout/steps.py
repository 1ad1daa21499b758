"""Where reasoning steps end, in tokens: rewards and labels given at a character of the completion
text (a step's last character) are placed on the token whose decoded text first reaches past it.

The rule is written on prefixes: token k ends at len(decode(ids[:k+1])), the decoded text (special
tokens skipped) of the completion up to and including it. Decoding every prefix costs O(T^2);
`token_ends` gets the same numbers in O(T) from short windows (see its docstring).
"""

from __future__ import annotations

import torch
from torch import Tensor

CONTEXT = 16  # tokens of left context each windowed decode sees (decoders look back a few bytes / chars)
BLOCK = 16  # tokens whose ends share one window start


def prefix_token_ends(tokenizer, ids: list[int]) -> list[int]:
    """The rule itself, O(T^2): for each token, len(decode(ids[:k+1], skip_special_tokens=True))."""
    prefixes = tokenizer.batch_decode([ids[: k + 1] for k in range(len(ids))], skip_special_tokens=True)
    return [len(p) for p in prefixes]


def token_ends(tokenizer, ids: list[int]) -> list[int]:
    """For each token of a completion, the length of the decoded text up to and including it (`prefix_token_ends`),
    in O(T): one `batch_decode` of short windows and one of the whole sequence.

    Token k adds len(decode(ids[s:k+1])) - len(decode(ids[s:k])) characters, read in a window that starts
    s <= k - CONTEXT tokens back (s = 0 near the start: there the window is the prefix itself). That equals
    the prefix rule's increment whenever decoding is local: a token changes the text only within a few
    characters before it (a byte-level BPE token completing a multi-byte character split across tokens; a
    SentencePiece leading space stripped at the text's start, the same in both decodes of a window;
    clean_up_tokenization_spaces' few-character patterns). A final check against the whole sequence's
    decode catches a decoder that is not local, and the prefix rule is then used as it is.
    """
    n = len(ids)
    if n == 0:
        return []
    windows, bounds = [], []  # per block: (first window index, start s, block's first and past-last token)
    for b in range(0, n, BLOCK):
        e, s = min(b + BLOCK, n), max(0, b - CONTEXT)
        bounds.append((len(windows), b, e))
        windows += [ids[s:j] for j in range(b, e + 1)]  # decode(ids[s:j]) for j = b..e
    texts = tokenizer.batch_decode(windows + [ids], skip_special_tokens=True)
    ends, total = [], 0
    for first, b, e in bounds:
        lengths = [len(t) for t in texts[first : first + e - b + 1]]
        for j in range(e - b):
            total += lengths[j + 1] - lengths[j]
            ends.append(total)
    if ends[-1] != len(texts[-1]):  # not a local decoder: the rule as written
        return prefix_token_ends(tokenizer, ids)
    return ends


def char_to_token(ends: list[int], char_index: int) -> int | None:
    """Index of the first token whose decoded text ends past `char_index`; None if no token does."""
    return next((k for k, end in enumerate(ends) if end > char_index), None)


def chars_to_tokens(ends: list[int], char_indices: list[int]) -> list[int | None]:
    """`char_to_token` of each index, in one pass over `ends` (O(T + K log K)).

    The first token ending past c never comes before the first ending past a smaller c' (it also ends
    past c'), so the queries are answered in increasing order with one pointer, even where `ends` is not
    monotone.
    """
    order = sorted(range(len(char_indices)), key=lambda q: char_indices[q])
    out: list[int | None] = [None] * len(char_indices)
    k = 0
    for q in order:
        while k < len(ends) and ends[k] <= char_indices[q]:
            k += 1
        out[q] = k if k < len(ends) else None
    return out


def step_reward_tensors(tokenizer, completion_ids: Tensor, completion_mask: Tensor, steps,
                        ended: Tensor) -> tuple[Tensor, Tensor]:
    """Place each step's reward on the token that ends it: step_rewards [N, T] float, step_end_mask [N, T] bool.

    steps: per row, (index of the step's last character in the completion text, reward) pairs.
    ended: [N] bool, the rows that stopped with EOS (not cut by the length limit). In those rows the last
        step ends on the row's last completion token (its EOS) instead: the tokens after the step's last
        character, EOS included, carry the final step's reward like the step's own tokens, so every
        estimator gives stopping the final step's advantage (otherwise the EOS token's advantage is 0 and
        stopping is never trained). A row cut by the length limit keeps its steps where they end.
    A step whose character lies past the decoded text gets no entry.
    """
    N, T = completion_ids.shape
    if ended.shape != (N,):
        raise ValueError(f"ended must be [N] = [{N}] (the rows that stopped with EOS), got {tuple(ended.shape)}")
    step_rewards = torch.zeros(N, T)
    step_end_mask = torch.zeros(N, T, dtype=torch.bool)
    for i, row_steps in enumerate(steps):
        if not row_steps:
            continue
        ids = completion_ids[i, completion_mask[i]].tolist()
        tokens = chars_to_tokens(token_ends(tokenizer, ids), [char_idx for char_idx, _ in row_steps])
        placed = [(t, reward) for (_, reward), t in zip(row_steps, tokens) if t is not None]
        if placed and bool(ended[i]):
            last = max(range(len(placed)), key=lambda k: placed[k][0])  # the step ending last
            placed[last] = (int(completion_mask[i].nonzero().max()), placed[last][1])  # its reward on the EOS token
        for t, reward in placed:
            step_rewards[i, t] = reward
            step_end_mask[i, t] = True
    return step_rewards, step_end_mask

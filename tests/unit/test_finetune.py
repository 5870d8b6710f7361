"""Fine-tuning examples are checked against OpenAI's format before they are written, and
feedback means are computed per conversation."""

from __future__ import annotations

import pytest

from hybridfast.experiments.finetune import NotExportable, feedback_means, training_example


def test_a_conversation_becomes_one_example() -> None:
    example = training_example(
        [
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "assistant", "content": "It is 42."},
        ]
    )
    roles = [m["role"] for m in example["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert example["messages"][1]["content"] == "ab"
    assert example["messages"][2]["tool_calls"][0]["id"] == "c1"
    assert example["messages"][3]["tool_call_id"] == "c1"


@pytest.mark.parametrize(
    ("conversation", "why"),
    [
        ([{"role": "user", "content": "q"}], "does not end with an answer"),
        (
            [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "assistant", "content": "a"},
            ],
            "'image_url' content part",
        ),
        ([{"role": "narrator", "content": "q"}, {"role": "assistant", "content": "a"}], "role"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": None}], "without"),
    ],
)
def test_what_the_format_cannot_hold_is_refused(
    conversation: list[dict[str, object]], why: str
) -> None:
    with pytest.raises(NotExportable, match=why):
        training_example(conversation)


def test_feedback_means_per_episode() -> None:
    rows = [
        {"metric": "thumbs_up", "value": 1.0, "episode_id": "r1"},
        {"metric": "thumbs_up", "value": 0.0, "episode_id": "r1"},
        {"metric": "thumbs_up", "value": 1.0, "episode_id": "r2"},
        {"metric": "stars", "value": 5.0, "episode_id": "r2"},
        {"metric": "thumbs_up", "value": 1.0, "episode_id": None},
    ]
    assert feedback_means(rows, "thumbs_up", "episode_id") == {"r1": 0.5, "r2": 1.0}

"""lm-eval helpers for the arc_easy_drllm task (bench/lm_eval/arc_easy_local.yaml)."""


def process_docs(dataset):
    """Our ARC JSONL rows ({"id", "question": {"stem", "choices": [{"text", "label"}]},
    "answerKey"}) in the schema of the Hugging Face `allenai/ai2_arc` dataset that lm-eval's own
    arc_easy task reads: {"id", "question": str, "choices": {"text": [...], "label": [...]},
    "answerKey"}. Labels stay as they are ("A".."E" or "1".."4"); the task finds the answer with
    choices.label.index(answerKey)."""

    def flatten(doc):
        choices = doc["question"]["choices"]
        if isinstance(choices, dict):  # a datasets version that returns a list of structs as columns
            choices = [dict(zip(choices, row)) for row in zip(*choices.values())]
        return {
            "id": doc["id"],
            "question": doc["question"]["stem"],
            "choices": {
                "text": [c["text"] for c in choices],
                "label": [c["label"] for c in choices],
            },
            "answerKey": doc["answerKey"],
        }

    return dataset.map(flatten, remove_columns=dataset.column_names)

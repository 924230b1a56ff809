"""Answer units on small hand-made Markdown: they follow the notes' structure."""

from __future__ import annotations

from index.answer.units import (
    Unit,
    asks_for_quantity,
    asks_for_several,
    counted,
    defined_terms,
    enumerates,
    named_term,
    names_term,
    parts,
    states_count,
    states_number,
    units_of,
    unknown_names,
    vocabulary,
)

METRICS = """\
- FID (Fréchet Inception Distance): measures distribution similarity. Lower is better.
- PSNR (Peak Signal-to-Noise Ratio): focuses on pixel-level difference. Higher is better.
"""

NET = """\
Residual Network with 50 layers, used for classification.
Structure roughly:
Image (3*224*224)
-> Conv1 -> 64*112*112
-> Conv2 -> 256*56*56
-> FNN + Softmax -> 1000 classes
"""

CODE = """\
The optimizer in numpy:
```python
def step(p, g):
    return p - 0.1 * g
```
Then it repeats.
"""

QUESTION = """\
Why can't Zero in half-precision update parameters directly?
Because gradient updates need high precision. Otherwise, small gradients may vanish.
"""


def kinds(units: list[Unit]) -> list[tuple[str, str]]:
    return [(u.kind, u.text) for u in units]


def test_a_definition_bullet_keeps_its_term_and_its_fragment() -> None:
    units = units_of(METRICS, heading="Common Metrics")
    items = [u for u in units if u.kind == "item"]
    assert [u.text for u in items] == [
        "FID (Fréchet Inception Distance): measures distribution similarity. Lower is better.",
        "PSNR (Peak Signal-to-Noise Ratio): focuses on pixel-level difference. Higher is better."]
    # no unit is the fragment alone
    assert not any(u.text in ("Lower is better.", "Higher is better.") for u in units)
    (whole,) = [u for u in units if u.kind == "list"]
    assert whole.items == 2 and whole.text.startswith("- FID") and whole.text.endswith("Higher is better.")
    assert "Common Metrics" in whole.context("Common Metrics")


def test_a_list_keeps_its_lead_in_and_all_items() -> None:
    text = "BERT typically uses two loss components:\n- Masked Language Model (MLM)\n- Next Sentence Prediction (NSP)\nGPT differs."
    (lst,) = [u for u in units_of(text) if u.kind == "list"]
    assert lst.text == ("BERT typically uses two loss components: - Masked Language Model (MLM) "
                        "- Next Sentence Prediction (NSP)")
    assert lst.lead_line == "BERT typically uses two loss components:"
    items = [u for u in units_of(text) if u.kind == "item"]
    assert all(u.lead == "BERT typically uses two loss components:" for u in items)
    # items of two words are fragments: only the whole list carries them
    short = "Inside a block:\n- Multi-head attention\n- Layer Normalization\n"
    units = units_of(short)
    assert kinds(units) == [("list", "Inside a block: - Multi-head attention - Layer Normalization")]
    assert units[0].whole


def test_arrow_lines_are_one_unit_with_their_lead_in_in_order() -> None:
    units = units_of(NET)
    assert kinds(units) == [
        ("prose", "Residual Network with 50 layers, used for classification."),
        ("diagram", "Structure roughly: Image (3*224*224) -> Conv1 -> 64*112*112 "
                    "-> Conv2 -> 256*56*56 -> FNN + Softmax -> 1000 classes"),
    ]
    assert units[1].items == 3
    assert NET[units[1].start:units[1].end] == units[1].quote  # offsets into the text


def test_a_code_block_is_kept_whole() -> None:
    units = units_of(CODE, offset=100)
    assert [u.kind for u in units] == ["prose", "code", "prose"]
    code = units[1]
    assert code.quote == "```python\ndef step(p, g):\n    return p - 0.1 * g\n```"
    assert CODE[code.start - 100:code.end - 100] == code.quote
    assert units[0].text == "The optimizer in numpy:"
    # unfenced code lines (as the notes' Adam) form one block too, a lone assignment does not
    bare = "Adam:\nm = np.zeros_like(params)\nfor t in range(3):\nreturn params\nThat is all of it."
    assert [u.kind for u in units_of(bare)] == ["prose", "code", "prose"]
    assert [u.kind for u in units_of("This is a first line.\nN = 1 is where it starts.")] == ["prose", "prose"]


def test_a_question_line_is_answered_by_what_follows() -> None:
    (u,) = units_of(QUESTION)
    assert u.text == "Because gradient updates need high precision. Otherwise, small gradients may vanish."
    assert u.lead.startswith("Why can't Zero")
    assert u.context().startswith("Why can't Zero")
    # a heading that is a question leads the list under it
    units = units_of("- Use dropout\n- Use early stopping, etc.\n", heading="How to reduce overfitting?")
    assert all(u.lead == "How to reduce overfitting?" for u in units)


def test_fragments_never_stand_alone() -> None:
    text = "Example:\nSample 1 has label 1 and prediction 0.9.\nLower is better.\nwhere k is a small constant."
    units = units_of(text)
    assert kinds(units) == [("prose", "Example: Sample 1 has label 1 and prediction 0.9."),
                            ("prose", "Lower is better. where k is a small constant.")]
    # in a long line the short sentence stays with the one before it
    long = ("FID measures the distance between two distributions of features of an inception "
            "network, computed on generated images and on real images of the same domain, "
            "by their means and covariances, and so it says how close they are. Lower is better. "
            "It needs many samples to be stable and is biased for small sets of images.")
    texts = [u.text for u in units_of(long)]
    assert len(texts) == 2 and texts[0].endswith("how close they are. Lower is better.")


def test_questions_that_ask_for_several_things() -> None:
    for q in ("What are the common GAN metrics?", "What are the stages of ResNet50?",
              "Which components are in a block?", "What are two ways to regularize?",
              "How do I reduce overfitting?"):
        assert asks_for_several(q), q
    for q in ("What is Huber loss?", "Which GAN metric is lower-is-better?",
              "Which dimensions does batch normalization normalize over?"):
        assert not asks_for_several(q), q


def test_parts_cut_prose_into_sentences_and_a_diagram_into_lines() -> None:
    prose = units_of("LoRA updates the weights without altering them. Lower is better. It is fast to train.")[0]
    assert [p.text for p in parts(prose)] == [
        "LoRA updates the weights without altering them. Lower is better.",  # the fragment stays
        "It is fast to train."]
    diagram = units_of(NET)[1]
    lines = parts(diagram)
    assert [p.text for p in lines] == ["-> Conv1 -> 64*112*112", "-> Conv2 -> 256*56*56",
                                       "-> FNN + Softmax -> 1000 classes"]  # the caption is no part
    assert all(NET[p.start:p.end] == p.quote and p.kind == "diagram" for p in lines)
    # a one-sentence line, an item, a list and a code block are not cut
    assert parts(units_of("Only one sentence here, and it is whole.")[0]) == []
    assert all(parts(u) == [] for u in units_of(METRICS) + units_of(CODE) if u.kind != "prose")


def test_questions_for_a_quantity_and_answers_that_state_one() -> None:
    for q in ("How many attention heads does BERT-base have?", "What batch size was CLIP trained with?",
              "How large is BERT's token vocabulary?", "What learning rate should I use with LoRA?",
              "Which GPU memory is faster, and by how much?"):
        assert asks_for_quantity(q), q
    for q in ("How does LoRA fine-tune a model?", "What is Huber loss?", "Which tokenizer does GPT-2 use?",
              "What are the steps of backprop through a matrix multiplication?", "What were the epochs like?"):
        assert not asks_for_quantity(q), q
    assert asks_for_quantity("What number of steps does DDPM use?") and asks_for_quantity("What steps count?")
    assert states_number("-> Conv1 -> 64*112*112") and states_number("about thirty thousand tokens")
    assert not states_number("Split the image into non-overlapping windows.")


def test_what_a_quantity_question_counts_and_answers_that_name_it() -> None:
    assert counted("How many attention heads does BERT-base have?") == "heads"
    assert counted("How many output classes does the final softmax have?") == "classes"
    assert counted("How many GPUs?") == "GPUs"
    assert counted("What batch size was CLIP trained with?") == "batch"
    assert counted("What is the default dropout rate?") == "dropout"
    # nothing named: "how large", a bare measure
    for q in ("How large is BERT's token vocabulary?", "What value is typical for Leaky ReLU?",
              "What is the size of the window?", "How does LoRA work?"):
        assert counted(q) is None, q
    # a stemmed word of it, next to the answer's number
    assert states_count("How many output classes does it have?", "FNN + Softmax -> 1000 classes")
    assert states_count("How many heads does it use?", "Multi-head self-attention, 8 of them")
    assert not states_count("How many parameters does ResNet-50 have?", "Residual Network with 50 layers")
    assert not states_count("What batch size was CLIP trained with?", "CLIP maps images and text, 400M pairs")
    assert states_count("How large is BERT's vocabulary?", "BERT uses 30,000 tokens")  # names nothing


def test_a_count_is_a_number_next_to_what_is_counted() -> None:
    assert counted("What is the default number of heads in a Transformer encoder block?") == "heads"
    assert counted("What stride does the first convolution use?") == "stride"  # a measure that names itself
    assert counted("What embedding dimension does BERT use?") == "dimension"
    assert states_count("How many layers does ResNet50 have?", "Residual Network with 50 layers")
    assert states_count("How many heads does it use?", "Multi-head self-attention, 8 of them")
    assert states_count("How many tokens are in it?", "an embedding matrix (30,000 tokens), plus")
    # a number of something else, five words past "Multi-head"; "ResNet50" is a name, not 50
    assert not states_count("How many heads does BERT use?",
                            "Multi-head self-attention - Feed Forward Network (two linear layers)")
    assert not states_count("How many parameters does ResNet50 have?", "Resnet50 Residual blocks")
    assert not states_count("What embedding dimension does BERT use?", "an embedding matrix (30,000 tokens)")
    assert states_count("How large is the constant?", "a small constant (e.g., 0.01).")  # names nothing


def test_an_enumeration_answers_a_count_of_what_it_enumerates() -> None:
    block = "Within each block, we have:\n- Multi-head self-attention\n- Feed Forward Network\n- Layer Normalization"
    (lst,) = [u for u in units_of(block) if u.kind == "list"]
    assert not enumerates("How many heads does multi-head attention use?", lst, "Transformer")
    assert enumerates("How many components does each block have?", lst, "Transformer")  # what lists list
    loss = "BERT typically uses two loss components:\n- Masked Language Model (MLM)\n- Next Sentence Prediction (NSP)"
    (lst,) = [u for u in units_of(loss) if u.kind == "list"]
    assert enumerates("How many losses does BERT train with?", lst)  # its lead-in names them
    metrics = "- FID: lower is better, a distance.\n- PSNR: higher is better, pixels.\n- IS: higher is better, a score."
    (lst,) = [u for u in units_of(metrics) if u.kind == "list"]
    assert enumerates("How many metrics are there?", lst, "Common Metrics")  # its heading does
    assert not enumerates("How many metrics are there?", lst, "GAN")
    diagram = "Structure roughly:\nImage (3*224*224)\n-> Conv1 -> 64*112*112\n-> Conv2 -> 256*56*56"
    (d,) = units_of(diagram)
    assert d.kind == "diagram"
    assert enumerates("How many stages does ResNet50 have?", d, "Resnet50")
    assert not enumerates("How many parameters does ResNet-50 have?", d, "Resnet50")
    assert enumerates("How large is the input?", d)  # it counts nothing named
    (p,) = units_of("ResNet has 50 layers in all.")
    assert not enumerates("How many layers does it have?", p)  # prose states a count, never enumerates one


def test_a_line_explaining_a_lost_formula_is_context_not_an_answer() -> None:
    text = "where is predicted by a neural network.\nLoss: MSE between the predicted noise and the actual noise .\n"
    (u,) = units_of(text)
    assert u.quote.startswith("Loss: MSE") and u.lead == "where is predicted by a neural network."
    # after a line it carries that line, as before
    (u,) = units_of("Leaky ReLU: a small negative slope for negative inputs.\nwhere is a small constant (e.g., 0.01).\n")
    assert u.text.endswith("where is a small constant (e.g., 0.01).")


def test_the_terms_a_definition_defines_and_questions_that_name_them() -> None:
    assert defined_terms("IS (Inception Score): uses a pretrained classifier.") == ["Inception Score"]
    assert defined_terms("- Batch Norm (BN): normalizes across the batch.") == ["Batch Norm"]  # "BN" too short
    assert defined_terms("Gradient Boosted Decision Trees (GBDT): builds trees.") == [
        "Gradient Boosted Decision Trees", "GBDT"]
    for text in ("Residual Network with 50 layers, used for classification.", "Lower is better.",
                 "Within each Encoder or Decoder block of the Transformer, we have: attention"):
        assert defined_terms(text) == [], text  # no term, or a lead-in sentence
    assert names_term("How does the Inception Score judge images?", "IS (Inception Score): uses a classifier.")
    assert not names_term("How does the Inception Score judge images?",
                          "FID (Fréchet Inception Distance): measures similarity.")
    assert names_term("Explain how a decision tree works.", "Decision Tree: iteratively split.")
    assert not names_term("Name an implementation of decision trees.", "Decision Tree: iteratively split.")
    # the term named, folded; a shared tail said once ("L1 and L2 loss")
    assert named_term("Compare FID and the Inception Score.", "IS (Inception Score): uses a classifier.") == "inception score"
    assert named_term("What is the difference between L1 and L2 loss?", "L1 Loss: Mean Absolute Error (MAE),") == "l1 loss"
    assert named_term("What is the difference between L1 and L2 loss?", "L2 Loss: Mean Squared Error (MSE),") == "l2 loss"
    assert named_term("Is L1 the loss to use?", "L1 Loss: Mean Absolute Error (MAE),") is None


def test_names_the_notes_never_mention() -> None:
    vocab = vocabulary(["ResNet50 uses skip connections.", "Adam keeps two moments; BERT uses MLM."])
    assert unknown_names("What FID score is good on CIFAR-10 with PyTorch?", vocab) == ["FID", "CIFAR-10", "PyTorch"]
    # run together, as the head of a word, or a plural: known
    assert unknown_names("How does a ResNet train, and is ResNet-50 deep?", vocab) == []
    assert unknown_names("Which moments does Adam keep in BERTs?", vocab) == []
    assert unknown_names("AdamW", vocab) == []  # the first word of a question is no name
    # a code name is known only whole: "run" and "loop" are words of the notes, "run_until_complete" not
    code = vocabulary(["Call get_deeper_nodes, e.g. with np.sqrt; the loop will run until it is complete."])
    assert unknown_names("How does asyncio.gather differ from loop.run_until_complete?", code) == [
        "asyncio.gather", "loop.run_until_complete"]
    assert unknown_names("What does get_deeper_nodes call, e.g. np.sqrt?", code) == []
    assert unknown_names("Why do we divide by sqrt(d_k)?", code) == []  # a subscript, not code

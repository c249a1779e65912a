"""Quality gates (filter/gates.py) on real outputs of the embedded generator (Qwen2.5-Coder-0.5B-Instruct).

Every bad row below was written by that model in a `flows.synth` run on embedded defaults (or by its
revisor) and must fail the gate named beside it; the fine rows from the same runs must pass.
"""
import numpy as np
import pytest

from embedfactory import prompts
from embedfactory.filter import gates
from embedfactory.filter.gates import Asked
from embedfactory.task_types import TASK_SPECS


def asked(task_type: str, task: str, attributes: dict) -> Asked:
    return Asked(prompts.fixed_part(TASK_SPECS[task_type].generate_prompt), task, attributes)


def persona_asked(seed_persona: str) -> Asked:
    return Asked(prompts.fixed_part("persona_expand"), seed_persona, {})


STS = "Retrieve semantically similar text."
BITEXT = "Retrieve parallel sentences that translate the given text."


def retrieval(query_length: str, num_words: int) -> dict:
    return {"clarity": "clear", "difficulty": "college", "language": "English", "num_words": num_words,
            "query_length": query_length, "query_type": "long-tail"}


def classification(num_words: int) -> dict:
    return {"clarity": "clear", "difficulty": "high school", "language": "English", "num_words": num_words}


def sts(unit: str = "phrase") -> dict:
    return {"difficulty": "high school", "high_score": 4.5, "language": "English", "low_score": 2.5, "unit": unit}


def bitext(source: str, target: str) -> dict:
    return {"difficulty": "high school", "high_score": 5, "low_score": 3.5, "source_language": source,
            "target_language": target, "unit": "sentence"}


# (gate that must catch it, task type, task, attributes, fields): verbatim model output
BAD = {
    "query is the task": ("echo", "retrieval", "Given my dog's name, find the facts about their age and breed.",
                          retrieval("5 to 15 words", 50), {
        "user_query": "Given my dog's name, find the facts about their age and breed.",
        "positive_document": "I just had a small birthday on December 31st. My dog is six years old, and it is "
                             "named Max. I have lived with it for three whole months now.",
        "hard_negative_document": "The dog doesn't seem to be interested in me as much as it was initially "
                                  "thought. It's like if I said 'I am the best dog ever'."}),
    "query is the task's own question": (
        "echo", "retrieval", "Given what is your name, find information about you as a person.",
        retrieval("at least 10 words", 50), {
            "user_query": "Find information about you as a person",
            "positive_document": "As an artificial intelligence language model, I don't have personal name or "
                                 "characteristics.",
            "hard_negative_document": "I am designed to answer questions and provide information on various "
                                      "topics, but I do not have a biological name or gender."}),
    "negative explains itself": (
        "echo", "retrieval", "Given a song title, find its lyrics and melody as well as the composer's name and "
        "years of work.", retrieval("less than 5 words", 50), {
            "user_query": "What is the song title for a popular pop rock album called 'Billie Jean'?",
            "positive_document": "The song 'Billie Jean' is known as 'My Brother' by American singer-songwriter "
                                 "Billy Jean.",
            "hard_negative_document": "This passage on the same subject does not answer the question but shares "
                                      "words with the query and does not contain any relevant lyrics."}),
    "negative quotes the prompt": (
        "echo", "retrieval", "Given a tennis player's performance in a recent match, find a brief description "
        "of the player's dominant moves and physical form.", retrieval("less than 5 words", 50), {
            "user_query": "What are the dominant moves of the tennis player's dominant move?",
            "positive_document": "The player's dominant move was a fast ball dribbling up towards his opponent.",
            "hard_negative_document": "There is no physical form on the opposing team that shares words with "
                                      "the query but does not answer it."}),
    "input is the task (short-short)": (
        "echo", "short-short", "Given the medical profession and its roles in respiratory and pulmonary disease "
        "treatment, what specific aspects do you find crucial for improving patient outcomes and reducing "
        "complications? ", {"clarity": "clear", "difficulty": "college", "language": "English"}, {
            "input": "Given the medical profession and its roles in respiratory and pulmonary disease treatment, "
                     "what specific aspects do you find crucial for improving patient outcomes and reducing "
                     "complications?",
            "positive_document": "What is the role of pulmonary and respiratory diseases in various health "
                                 "systems?"}),
    "input copies the task's example": (
        "echo", "classification", "Classify information about the upcoming event by its purpose and target "
        "audience. For example: 'Event: Movie Night - The Adventure of a Story' with 'purpose: entertainment' "
        "and 'target audience: adult'.", classification(10), {
            "input_text": "Event: Movie Night - The Adventure of a Story", "label": "entertainment",
            "misleading_label": "adventure"}),
    "input restates the task": (
        "echo", "classification", "Classify software updates by the nature of changes they introduce. This helps "
        "in understanding how system components can be updated efficiently and reliably.", classification(10), {
            "input_text": "How system components can be updated efficiently and reliably?", "label": "Update",
            "misleading_label": "Reboot"}),
    "label names the task": ("label", "classification", "Classify books by their subject, author, publisher, or "
                             "genre.", classification(100), {
        "input_text": "Books by their subject, author, publisher, or genre.", "label": "book classification",
        "misleading_label": "genre"}),
    "revised S3 talks about the task": ("echo", "sts", STS, sts(), {  # a revision the revisor accepted
        "S1": "The sun is shining brightly", "S2": "I love ice cream and chocolate",
        "S3": "I love ice cream, so this task doesn't relate to retrieving semantically similar text. There are "
              "no comparable text samples related to these words."}),
    "revised bitext restates the task": ("echo", "bitext", BITEXT, bitext("Arabic", "German"), {
        "S1": "Translate the given text into English.", "S2": "Find parallel sentences that translate this text.",
        "S3": "Identify the parallel sentence with the maximum number of translations."}),
    "STS texts describe the fields": ("echo", "sts", STS, sts(), {  # kept by the 96-persona mix run
        "S1": "A concise, coherent description of a scenario or event that might be useful for retrieval tasks.",
        "S2": "An informative but not very clear description of the same scenario or event.",
        "S3": "A story about a city at night."}),
    # from the 96-persona mix run's published rows (/work/bmix2; the sentences after the quoted
    # openings shortened here)
    "S2 comments on itself": ("echo", "sts", STS, sts("sentence"), {
        "S1": "The planets of our solar system orbit the sun on nearly flat paths.",
        "S2": "This sentence accurately describes the scenario where planets move around the sun.",
        "S3": "Saturn's rings are made mostly of ice."}),
    "S3 explains a word": ("echo", "sts", STS, sts("sentence"), {
        "S1": "The planets of our solar system orbit the sun on nearly flat paths.",
        "S2": "Planets travel around the sun in almost level orbits.",
        "S3": "In this sentence, we see that the word 'planets' refers to large bodies."}),
    "sentences of one or two words": ("sts", "sts", STS, sts("sentence"), {
        "S1": "Business", "S2": "Small Business", "S3": "Bakeries"}),
    "pangram filler": ("degenerate", "sts", STS, sts("passage"), {
        "S1": "The quick brown fox jumps over the lazy dog", "S2": "A cat chased a mouse in the park",
        "S3": "A group of children playing with toys"}),
    "three near copies": ("sts", "sts", STS, sts(), {
        "S1": "The quick brown fox jumps over the lazy dog", "S2": "The quick brown fox jumps over the cat",
        "S3": "The quick brown fox jumps over the fish"}),
    "S3 a near copy of S2": ("sts", "sts", STS, sts("passage"), {
        "S1": "The quick brown fox jumps over the lazy dog",
        "S2": "A story about a cat who always wants to cuddle up in his room",
        "S3": "A story about a cat who always wants to cuddle up in his house"}),
    "target side in Russian, not German": ("language", "bitext", BITEXT, bitext("Arabic", "German"), {
        "S1": "هذا هو موضوع شبهة للكتب العربية.", "S2": "Эта идея очень важна для языковых редакторов.",
        "S3": "В этом случае, идею не изменяет факты, но делает число 30."}),
    "source side in Arabic, not English": ("language", "bitext", BITEXT, bitext("English", "Arabic"), {
        "S1": "أنت أنا لاحظف ذكره.", "S2": "هذا النص غير صحيًا، لكن يبدو بشكل جدٍ فعالاً في التحدث معني.",
        "S3": "هذا النص تتحدث عن ذكريته باللغة العربية، لكن يبدو أنه تمثل طريقة تقسيم مفيدة وتعتمد على القضايا."}),
    "source side in German, not Russian": ("language", "bitext", BITEXT, bitext("Russian", "German"), {
        "S1": "Ich bin ein lebensfähiges Innovator, das die Welt zu bieten kann.",
        "S2": "Wir sind ein lebensähiges Innovator, das die Welt zu bieten kann.",
        "S3": "Es ist eine gute Idee für die Welt zu bieten."}),
    "document of 13 words for 100": ("length", "retrieval", "Given a song title, find its lyrics and melody as "
                                     "well as the composer's name and years of work.",
                                     retrieval("less than 5 words", 100), {
        "user_query": "Song by Chet Zoccher",
        "positive_document": "Chet Zoccher's latest cover version of 'My Way to the Moonlight' in 2005.",
        "hard_negative_document": "A song that explores themes of love, desire, and hope. It was released in 1974."}),
    "hard negative of 18 words for 50 (its 7-word query for less than 5 is within the slack)": (
        "length", "retrieval", "Given the need for an online resource on natural language processing, find "
        "information about its current state and future developments.", retrieval("less than 5 words", 50), {
            "user_query": "What does natural language processing (NLP) do?",
            "positive_document": "Natural Language Processing (NLP) is a branch of machine learning that helps "
                                 "computers understand and generate human language by processing, analyzing, and "
                                 "synthesizing information from data.",
            "hard_negative_document": "It has been successfully used in various applications, such as speech "
                                      "recognition, natural language interpretation, and sentiment analysis."}),
    "input of 7 words for 50": ("length", "classification", "Classify mental health by mood and personality "
                                "traits. ", classification(50), {
        "input_text": "Mental health, feelings, mood, personality traits", "label": "mood disorder",
        "misleading_label": "cognitive disorders"}),
}

# fine rows from the same runs: every gate passes
GOOD = {
    "classification": ("classification", "Classify bike repairs by cost-effectiveness vs. quality and "
                       "durability of components.", classification(10), {
        "input_text": "The cost-effectiveness of bike repairs depends on the size, type, and quality of the "
                      "components.", "label": "Quality", "misleading_label": "Cost"}),
    "classification, 50 words": ("classification", "Classify textual data by the type of information they "
                                 "contain for medical classification.", classification(50), {
        "input_text": "The medical diagnosis of a patient requires evaluating multiple pieces of information. For "
                      "example, the patient's age, gender, current health conditions, medications taken, and any "
                      "symptoms that could be presented.", "label": "diagnosis", "misleading_label": "history"}),
    "sts sharing words": ("sts", STS, sts("sentence"), {
        "S1": "The sun is shining brightly.", "S2": "The sun is also bright as it appears in the sky.",
        "S3": "The sun is much more colorful than it appears."}),
    "sts phrases may be one word": ("sts", STS, sts("phrase"), {
        "S1": "Small business loans", "S2": "Loans for small firms", "S3": "Bakeries"}),
    "sts sentences of two words with their full stop": ("sts", STS, sts("sentence"), {
        "S1": "It rains.", "S2": "Rain falls.", "S3": "Sun shines!"}),
    "sts sentences in Chinese": ("sts", STS, {**sts("sentence"), "language": "Chinese"}, {
        "S1": "今天天气很好。", "S2": "今天是晴天。", "S3": "我喜欢吃苹果。"}),
    "sts": ("sts", STS, sts("passage"), {
        "S1": "A person named Tim was walking to his workplace.",
        "S2": "Tim had just finished his morning shower and decided he wanted to go for a walk home.",
        "S3": "He couldn't help but smile at the sight of the beautiful flowers on the outside."}),
}

# fine retrieval rows whose only fault is documents far shorter than asked (the 0.5B model's habit)
SHORT_DOCUMENTS = {
    "python": ("Given 'python', find the description of a programming language.", retrieval("5 to 15 words", 50), {
        "user_query": "What is the most important concept of Python programming?",
        "positive_document": "Python's philosophy of simplicity and readability is crucial for building robust "
                             "and scalable applications.",
        "hard_negative_document": "One of Python's fundamental features is its use of object-oriented "
                                  "programming, which can lead to more maintainable and scalable code."}),
    "weather": ("Given the weather forecast for tomorrow in New York City, find a clear statement about what "
                "will rain and why. ", retrieval("less than 5 words", 50), {
        "user_query": "What will it rain today?",
        "positive_document": "New York City weather forecast predicts an average of 60% chance of rain.",
        "hard_negative_document": "A neighboring city with fewer than 200 people shows a severe storm on the way."}),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_row_fails_its_gate(case):
    gate, task_type, task, attributes, fields = BAD[case]
    reason = gates.check(task_type, fields, asked(task_type, task, attributes), names=(gate,))
    assert reason and reason.startswith(f"gate {gate}: ")
    assert gates.check(task_type, fields, asked(task_type, task, attributes))  # and check() fails it


@pytest.mark.parametrize("case", sorted(GOOD))
def test_fine_rows_pass_every_gate(case):
    task_type, task, attributes, fields = GOOD[case]
    assert gates.check(task_type, fields, asked(task_type, task, attributes)) is None


@pytest.mark.parametrize("case", sorted(SHORT_DOCUMENTS))
def test_short_documents_fail_only_the_length_gate(case):
    task, attributes, fields = SHORT_DOCUMENTS[case]
    a = asked("retrieval", task, attributes)
    assert gates.check("retrieval", fields, a, names=tuple(n for n in gates.GATE_NAMES if n != "length")) is None
    assert gates.check("retrieval", fields, a).startswith("gate length: positive_document has ")


def test_check_reports_the_first_failure_with_its_field():
    gate, task_type, task, attributes, fields = BAD["query is the task"]
    assert gates.check(task_type, fields, asked(task_type, task, attributes)) == (
        "gate echo: user_query copies 12 of its 12 words from the task: "
        '"given my dog\'s name find the facts about their age and breed"')
    assert gates.check(task_type, fields, asked(task_type, task, attributes), names=()) is None


def test_the_prompt_echoed_as_a_query():
    a = asked("retrieval", "Given a question about bicycle maintenance, retrieve forum posts that answer it.",
              retrieval("5 to 15 words", 50))
    # the generator echoed its field description; the revisor then "fixed" it
    assert gates.echo("what a searcher would type for this task", a).startswith("repeats the prompt")
    assert gates.echo("What would you type for this task", a)
    assert gates.echo("user_query", a) == "names the field 'user_query'"
    assert gates.echo("5 to 15 words", a) == "repeats the attribute value '5 to 15 words'"
    assert gates.echo("how often should a chain be waxed", a) is None
    # a length ask inside real text is not an echo; the ask alone is
    c = asked("classification", "Classify shipping requests by urgency", classification("less than 10"))
    assert gates.echo("Please ship less than 10 boxes to our Denver office today", c) is None
    assert gates.echo("less than 10", c) == "repeats the attribute value 'less than 10'"
    assert gates.echo("Gradient boosted trees remain strong baselines for classification tasks.", c) is None


def test_the_clients_repair_turn_echoed_as_content():
    """A real short-short input of an aligned 0.5B senior (2026-12-04): it answered the client's repair
    message with the message itself."""
    a = asked("short-short", "Given a dish name, find the cuisine it comes from.", {"language": "English"})
    echoed = ("Your reply could not be used (truncated: reply hit max_tokens). Answer again with one JSON "
              "object that follows the schema exactly, and nothing else.")
    assert gates.echo(echoed, a).startswith("repeats the prompt")
    assert gates.echo("The trial drug could not be used in children under five.", a) is None


def test_grammar_prose_may_say_in_this_sentence_outside_sts():
    a = asked("retrieval", "Given a grammar question, retrieve an explanation", retrieval("5 to 15 words", 50))
    fields = {"user_query": "what is an intransitive verb",
              "positive_document": "In this sentence, the verb 'sleeps' is intransitive: it takes no object. "
                                   "This sentence is about a cat that sleeps all afternoon on the porch.",
              "hard_negative_document": "A transitive verb such as 'carry' needs an object to complete it."}
    assert gates.check("retrieval", fields, a, names=("echo",)) is None


def test_personas_that_restate_the_prompt_or_copy_their_seed():
    nurse = "A night-shift nurse in a rural hospital who studies for a pharmacology certificate between patients."
    teacher = "A high-school chemistry teacher building low-cost lab experiments for students with few resources."
    engineer = "A retired civil engineer who volunteers to repair bicycles for a neighbourhood youth club."
    analyst = "A junior data analyst at a regional bank who must explain loan risk models to branch managers."
    assert gates.persona("An elderly woman whose life could touch this person's work…", persona_asked(nurse))
    assert gates.persona("A middle school science teacher building low-cost lab experiments for students with "
                         "more resources.", persona_asked(teacher)).startswith("gate echo: persona copies")
    assert gates.persona("A retired civil engineer who volunteers to fix bike problems", persona_asked(engineer))
    assert gates.persona("An experienced data analyst at a local bank", persona_asked(analyst))  # same job and place
    translator = "A freelance translator of Japanese video games who worries about keeping up with new slang."
    for text, seed in [("An urban nurse at a public hospital that specializes in respiratory and pulmonary "
                        "disease treatment.", nurse), ("A scientist who tests new medicines", teacher),
                       ("An indie game designer in a small city", translator),
                       ("An architect who designs and installs new buildings in neighborhoods", engineer)]:
        assert gates.persona(text, persona_asked(seed)) is None, text


def test_labels():
    a = Asked("", "Classify product reviews by sentiment", {})
    assert gates.label({"label": "not suitable", "misleading_label": "positive"}, a).startswith(
        'label is a generic non-label: "not suitable"')
    assert gates.label({"label": "negative", "misleading_label": "n/a"}, a)
    assert gates.label({"label": "The positive", "misleading_label": "positive."}, a) == \
        "label equals misleading_label"
    assert gates.label({"label": "a review that praises the product for its long battery life",
                        "misleading_label": "negative"}, a).startswith("label has 11 words")
    assert gates.label({"label": "positive", "misleading_label": "negative"}, a) is None
    # a class the task itself names is no generic label
    fit = Asked("", "Classify job applications as suitable or not suitable for the role", {})
    assert gates.label({"label": "not suitable", "misleading_label": "suitable"}, fit) is None


def test_copy_of_the_positive_or_its_title():
    passage = ("Flat tyres are the most common roadside repair. To fix a flat tyre, remove the wheel, lever one "
               "side of the tyre off the rim and pull out the tube.")
    assert gates.copy("to fix a flat tyre remove the wheel", passage).startswith("copies 8 of its 8 words")
    assert gates.copy("Fixing a flat tyre", passage, title="Fixing a flat tyre") == "equals the title"
    assert gates.copy("fixing flat tyre", passage, title="Fixing a flat tyre").startswith(
        "is a near copy of the title")
    assert gates.copy("how do I get a tube out of a bike wheel", passage, title="Fixing a flat tyre") is None


def test_length_ranges():
    assert gates.asked_range("less than 5 words") == (1, 4)
    assert gates.asked_range("5 to 15 words") == (5, 15)
    assert gates.asked_range("at least 10 words") == (10, float("inf"))
    assert gates.length("word " * 9, {"query_length": "less than 5 words"}, "query_length") is None
    assert gates.length("word " * 10, {"query_length": "less than 5 words"}, "query_length")
    assert gates.length("word " * 25, {"num_words": 50}) is None and gates.length("word " * 24, {"num_words": 50})
    # a number asks "at least N words" (E5's documents): no upper bound
    assert gates.length("word " * 400, {"num_words": 50}) is None
    # classification's input_text lengths as E5 words them
    assert gates.asked_range("less than 10") == (1, 9) and gates.asked_range("at least 200") == (200, float("inf"))
    assert gates.length("", {}) is None  # nothing asked


def test_degenerate_text():
    assert gates.degenerate("  ") == "has no words"
    assert gates.degenerate("N/A") and gates.degenerate("...") and gates.degenerate("[Insert query here]")
    assert gates.degenerate("Lorem ipsum dolor sit amet") and gates.degenerate("<query>")
    assert gates.degenerate("the best the best the best bike") == 'repeats "the best" 3 times in a row'
    assert gates.degenerate("Fix it now. Fix it now please. " + "It rains all day long. " * 3)
    assert gates.degenerate("It was raining heavily. I went for a walk after school.") is None


def test_language_of_a_translation():
    assert gates.language("Der Hund schläft im Garten.", "German", source="Der Hund schläft im Garten!") == \
        "equals its source side (not translated)"
    assert gates.language("The dog is sleeping in the garden and it is happy", "Spanish").startswith(
        "is not in Spanish: ")
    assert gates.language("狗在花园里睡觉。", "Chinese") is None and gates.language("The dog sleeps.", "Chinese")
    assert gates.language("El perro duerme en el jardín y está feliz.", "Spanish") is None


def test_sts_order_flags_rows_where_s3_is_at_least_as_close_as_s2():
    s1 = np.array([[1.0, 0.0], [1.0, 0.0]])
    s2 = np.array([[0.8, 0.6], [0.0, 1.0]])
    s3 = np.array([[0.0, 1.0], [0.6, 0.8]])
    assert gates.sts_order(s1, s2, s3) == [None, "gate sts: S3 is not less similar to S1 than S2 is"]


def test_check_query_for_grounded_queries():
    a = Asked(prompts.fixed_part("grounded_query"), "Given a question, retrieve passages that answer it",
              {"query_length": "5 to 15 words", "title": "Fixing a flat tyre"})
    passage = "To fix a flat tyre, remove the wheel, lever one side of the tyre off the rim and pull out the tube."
    assert gates.check_query("Fixing a flat tyre", passage, "Fixing a flat tyre", a).startswith("gate copy: ")
    assert gates.check_query("what is this passage about", passage, None, a).startswith("gate echo: ")
    assert gates.check_query("how do I get the inner tube out of a bicycle wheel", passage, None, a) is None
    assert gates.check_query("tube", passage, None, a).startswith("gate length: ")


def test_fixed_part_is_the_system_block():
    assert prompts.fixed_part("generate_retrieval").startswith("You write training examples")
    assert "{{" not in prompts.fixed_part("generate_retrieval") and "Task:" not in prompts.fixed_part("generate_retrieval")
    assert prompts.fixed_part("persona_system") == ""

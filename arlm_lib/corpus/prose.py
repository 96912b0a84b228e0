"""A small English prose corpus written for this project: plain expository text about language models.

It is original text (no third-party material), plain ASCII, one paragraph per line, for the BPE and
real-text demos. ``prose_text()`` returns it with every paragraph followed by a newline.
"""

from __future__ import annotations

_PARAGRAPHS = (
    # What a language model is
    "A language model assigns a probability to every piece of text. Given the words written so far, it "
    "says how likely each possible next word is. That single ability turns out to be surprisingly useful. "
    "A model that can score text can also write text: pick a likely next word, append it, and ask again. "
    "Repeating this simple loop produces sentences, paragraphs, and whole documents.",
    "The oldest language models were tables of counts. To guess the word after the phrase the cat sat on "
    "the, one could look through a large collection of books, find every place where that phrase occurs, "
    "and count which words came next. If mat followed the phrase forty times and floor followed it ten "
    "times, the model would say mat with probability four fifths. Such tables are called n-gram models, "
    "because they look at the last n minus one words to predict the next one.",
    "Counting works well for short contexts and fails for long ones. Most sequences of ten words have "
    "never been written before, so a table indexed by ten words is almost entirely empty. Smoothing "
    "methods move a little probability from seen events to unseen ones, and backoff methods fall back to "
    "a shorter context when the long one has never been observed. These tricks help, but they cannot let "
    "a model reason about a word that appeared a whole paragraph earlier.",
    "Neural language models replace the table with a function that has learned parameters. Instead of "
    "treating every word as an unrelated symbol, a neural model maps each word to a vector of numbers, "
    "called an embedding. Words that are used in similar ways end up with similar vectors, so what the "
    "model learns about one word can carry over to its neighbours. This sharing is what allows a neural "
    "model to generalise to sequences it has never seen.",
    # The factorisation
    "The key idea behind an autoregressive model is a rule from probability theory called the chain rule. "
    "The probability of a whole sequence equals the probability of its first token, times the probability "
    "of the second token given the first, times the probability of the third token given the first two, "
    "and so on until the end. Nothing is lost by writing the probability this way; it is an identity, not "
    "an approximation. The approximation only enters when a model looks at a limited window of context.",
    "Because of the chain rule, a model never needs to score a whole sentence at once. It only needs to "
    "answer one kind of question, over and over: what comes next? Training therefore becomes a long series "
    "of small classification problems. At every position of every document, the model sees the tokens to "
    "the left and must put as much probability as it can on the token that actually follows.",
    "The usual measure of how well a model predicts is the cross-entropy: the average negative logarithm of "
    "the probability the model gave to each correct next token. When the logarithm is taken in base two "
    "the result is measured in bits. A model that is certain and right scores zero bits; a model that "
    "spreads its probability evenly over a vocabulary of sixty-four symbols scores six bits per symbol. "
    "Perplexity is the same quantity seen through an exponential: it is the number of equally likely "
    "choices that would leave the model just as uncertain.",
    "Cross-entropy has a useful property: it is a proper scoring rule. If text really is produced by some "
    "probability distribution, then no model can have a lower expected cross-entropy than that "
    "distribution itself. The lowest achievable value is the entropy of the source. For real language we "
    "never know that number, but for a synthetic language whose rules we wrote ourselves we can compute it "
    "exactly, and then measure how far a trained model is from the floor.",
    # Tokenization
    "Before a model can read text, the text must be cut into tokens. The simplest choice is one token per "
    "character. A character vocabulary is tiny, every string can be encoded, and nothing is ever unknown. "
    "The price is length: a sentence of twenty words becomes a hundred or more tokens, and the model has "
    "to spend effort learning how to spell.",
    "At the other extreme, one could give every word its own token. Sequences become short, but the "
    "vocabulary explodes, rare words appear too seldom to learn, and a word that was never seen in "
    "training cannot be represented at all. Most modern systems choose a middle path called subword "
    "tokenization, in which common words are single tokens and rare words are built from smaller pieces.",
    "Byte pair encoding is the best known subword method. It starts from individual characters and "
    "repeatedly finds the pair of adjacent symbols that occurs most often in the training text. That pair "
    "is merged into a new symbol and added to the vocabulary. After a few thousand merges, frequent words "
    "such as the and and are single symbols, common endings such as ing and tion have their own symbols, "
    "and unusual words are spelled out from a handful of pieces.",
    "The tokenizer is trained once and then frozen. The same merges must be applied when the model is "
    "trained, when it is evaluated, and when it generates text. A model trained with one tokenizer cannot "
    "simply be given another, because the meaning of every token id would change. For that reason a "
    "checkpoint of a language model should always carry its tokenizer with it.",
    "Comparing models that use different tokenizers requires care. A loss of two bits per token means "
    "something very different when a token is one character than when it is four. The fair comparison "
    "converts everything to bits per character, or bits per byte, by dividing the total number of bits by "
    "the length of the text rather than by the number of tokens.",
    "Special tokens mark structure that is not part of the words themselves. A start token tells the model "
    "that a new document begins, so that generation from an empty prompt has somewhere to start. An end "
    "token lets the model say that a document is finished. In a simple character model the newline "
    "character can play both roles: it ends one line and announces the next.",
    # Data preparation
    "Training data for a language model is usually one long stream of token ids. The stream is cut into "
    "windows of a fixed length, called the block size or context length. For each window the input is the "
    "sequence of tokens and the target is the same sequence shifted one position to the left. Every "
    "position in the window therefore provides one prediction problem, and a single window of length one "
    "hundred gives one hundred training examples at once.",
    "Because the windows are cut from a continuous stream, they all have the same length and no padding is "
    "needed during training. Padding becomes necessary later, when several prompts of different lengths "
    "are processed together during generation. Then an attention mask tells the model which positions are "
    "real tokens and which are filler that must be ignored.",
    "It is good practice to keep a part of the data aside for validation. The model never trains on it, so "
    "its loss there estimates how the model will do on new text. When the training loss keeps falling but "
    "the validation loss starts to rise, the model has begun to memorise its training set instead of "
    "learning patterns that generalise.",
    # Attention
    "The transformer is the architecture behind most current language models. Its central operation is "
    "attention. At each position, the model forms a query vector that describes what it is looking for, "
    "and every earlier position offers a key vector that describes what it contains. The dot product of "
    "the query with each key measures how well they match, and a softmax turns these scores into weights "
    "that sum to one.",
    "The output of attention at a position is a weighted average of value vectors, one from each position "
    "it attends to. If the weights are concentrated on a single earlier token, attention acts like a "
    "lookup that copies information from that token. If the weights are spread out, attention computes a "
    "kind of summary of the context. The model learns which behaviour is useful by adjusting the matrices "
    "that produce queries, keys and values.",
    "In an autoregressive model a position must not look at the future. When the model predicts the token "
    "at position ten, the tokens at positions eleven and beyond are exactly what it is trying to guess, so "
    "seeing them would be cheating. A causal mask enforces this rule by setting the attention scores for "
    "all later positions to minus infinity before the softmax, which makes their weights exactly zero.",
    "Without the causal mask, training goes strangely well: the loss drops almost to zero, because the "
    "answer is visible in the input. The model learns to copy the next token instead of predicting it. At "
    "generation time the trick collapses, since the future has not been written yet, and the output is "
    "nonsense. A quick sanity check for any implementation is to change a later token and confirm that the "
    "predictions at earlier positions do not move.",
    "The dot products in attention are divided by the square root of the key dimension. The reason is "
    "statistical. If the entries of a query and a key are independent with unit variance, their dot "
    "product has a variance equal to the dimension. With a large dimension the scores become large, the "
    "softmax becomes almost a hard maximum, and its gradient becomes tiny. Dividing by the square root "
    "brings the variance back to about one and keeps learning healthy.",
    "Multi-head attention runs several attention operations side by side, each with its own smaller "
    "queries, keys and values. One head might track the previous token, another the start of the current "
    "sentence, another a matching opening bracket. The outputs of the heads are concatenated and mixed by "
    "a final linear layer. Heads make it cheap for the model to attend to several things at once.",
    "Attention by itself does not know the order of the tokens: shuffling the context would shuffle the "
    "outputs in the same way. Language depends on order, so the model adds position information to the "
    "token embeddings. The simplest method learns one vector for each position up to the maximum context "
    "length. Other methods encode relative distances, or rotate queries and keys by an angle that grows "
    "with position.",
    "Some attention heads become easy to interpret. A well studied example is the induction head. When a "
    "sequence of tokens appears for the second time, an induction head looks back to the token that "
    "followed the first occurrence and predicts it again. Induction heads let a model continue a pattern "
    "it has seen only once in its context, and they tend to appear suddenly during training, together "
    "with a visible drop in the loss.",
    # The block
    "A transformer block combines attention with a small feed-forward network that is applied to each "
    "position separately. Attention moves information between positions; the feed-forward network "
    "transforms the information at each position. Stacking many blocks lets the model build up more "
    "abstract features layer by layer, from spelling and word identity near the bottom to syntax and "
    "topic further up.",
    "Each sublayer in a block is wrapped in a residual connection: its output is added to its input rather "
    "than replacing it. The residual stream gives every layer direct access to the embeddings and gives "
    "the gradient a short path from the loss back to the earliest layers. Without residual connections, "
    "deep stacks of layers are very hard to train.",
    "Layer normalization rescales the vector at each position to have zero mean and unit variance, then "
    "applies a learned scale and shift. Placing the normalization before each sublayer, inside the "
    "residual branch, is called the pre-norm arrangement. It keeps the residual stream clean and makes "
    "training stable even without a careful warmup. The original transformer placed the normalization "
    "after the residual addition, which works but is more delicate.",
    "The last layer of the model maps each position's vector to one score per vocabulary entry. These "
    "scores are called logits. A softmax turns the logits into a probability distribution over the next "
    "token. Many models reuse the input embedding matrix as this output layer, a choice called weight "
    "tying, which saves parameters and often helps small models.",
    # Training
    "Training adjusts the parameters to lower the cross-entropy on the training data. The gradient of the "
    "loss with respect to every parameter is computed by backpropagation, and an optimizer takes a small "
    "step against the gradient. The Adam family of optimizers keeps running averages of the gradient and "
    "of its square, which lets every parameter move at a sensible speed even when gradients differ greatly "
    "in size.",
    "The learning rate is the single most important setting. Too small, and training crawls; too large, "
    "and the loss jumps around or explodes to infinity. A common schedule starts with a short warmup, in "
    "which the learning rate grows linearly from zero, and then decays it smoothly, for example along a "
    "cosine curve, until the end of training.",
    "Occasionally a batch produces a very large gradient, and a single update can undo hours of progress. "
    "Gradient clipping guards against this by rescaling the whole gradient whenever its norm exceeds a "
    "threshold. Clipping does not change the direction of the update, only its length, so in normal "
    "steps it has no effect at all.",
    "Small models are useful laboratories. A model with a few hundred thousand parameters trains on an "
    "ordinary laptop in minutes, and it already shows the same phenomena as large ones: the loss falls "
    "quickly at first and then slowly, unstable settings diverge, and attention heads specialise. Many "
    "lessons learned on small models carry over to large ones, though not all of them.",
    "Watching the loss curve is the most basic form of debugging. A loss that starts near the logarithm of "
    "the vocabulary size shows that the model begins with no knowledge, as it should. A loss that falls "
    "below what seems possible usually points to a leak, such as a missing causal mask. A loss that turns "
    "into not a number points to an overflow, often caused by a learning rate that is too high.",
    # Generation
    "Once trained, the model generates text one token at a time. It reads the prompt, produces a "
    "distribution over the next token, chooses one, appends it, and repeats. Generation stops when the "
    "model emits an end token or when a maximum length is reached. Every choice depends on all the earlier "
    "ones, so a single unlucky token can steer the rest of the text in a new direction.",
    "The simplest way to choose the next token is to take the most probable one. This greedy decoding is "
    "deterministic and often repetitive: the model can fall into a loop, repeating the same phrase again "
    "and again. Sampling from the distribution instead produces more varied text, at the risk of "
    "sometimes picking a token that makes little sense.",
    "Temperature controls how adventurous sampling is. The logits are divided by the temperature before "
    "the softmax. A temperature below one sharpens the distribution toward the most likely tokens, and a "
    "temperature above one flattens it. At a temperature near zero, sampling becomes greedy decoding; at a "
    "very high temperature, every token becomes nearly equally likely.",
    "Top-k sampling keeps only the k most probable tokens and renormalises their probabilities before "
    "sampling. Top-p sampling, also called nucleus sampling, keeps the smallest set of tokens whose "
    "probabilities add up to at least p. Both methods cut off the long tail of unlikely tokens, which is "
    "where most of the nonsense comes from, while keeping some variety among the plausible ones.",
    "Beam search keeps several candidate continuations at once and extends each of them by one token at "
    "every step, keeping only the best scoring candidates. It finds sequences with higher total "
    "probability than greedy decoding does. For open-ended writing, however, the most probable text is "
    "often dull, so beam search is more common in tasks such as translation, where there is one right "
    "answer.",
    "Generating a long text naively repeats a lot of work: at every step the model recomputes the keys and "
    "values of the whole prefix, although only one new token was added. A key-value cache stores these "
    "vectors from earlier steps, so that each new step only computes the keys and values of the newest "
    "token. The output is identical, and generation becomes much faster.",
    # Evaluation and limits
    "A model's quality depends on what it is asked to do. The cross-entropy on held-out text is a clean, "
    "general measure, but it does not say whether the generated text is useful, true, or safe. For that, "
    "people use task benchmarks, human judgement, and careful tests of specific abilities, such as whether "
    "a model keeps the number of a subject consistent with its verb across a long clause.",
    "Subject and verb agreement is a classic probe of long-range structure. In the sentence the keys that "
    "the man left on the table are missing, the verb are agrees with keys, not with the nearer words man "
    "or table. A model that only looks at the last few words will often get this wrong, while a model that "
    "has learned the structure of the sentence will get it right.",
    "Matched brackets are another simple test. After an opening parenthesis and an opening square "
    "bracket, the next closing symbol must be a square bracket, and only then the parenthesis. To predict "
    "this, a model has to keep track of a small stack of open symbols. Counting models fail as soon as the "
    "stack is deeper than their context, while attention can look back at the open symbols directly.",
    "The context window of a transformer is a hard limit. A model trained with a block size of two hundred "
    "and fifty six tokens simply cannot see the token two hundred and fifty seven positions back. For an "
    "n-gram model the window is a simplifying assumption; for a transformer it is a property of the "
    "architecture. Within its window, though, a transformer can use any earlier token as easily as the "
    "previous one.",
    "Large language models are trained on enormous amounts of text with a very simple objective: predict "
    "the next token. Everything else they can do, from answering questions to writing code, emerges from "
    "that objective combined with scale, careful data, and later fine-tuning. Studying small models on "
    "small data makes each ingredient visible, one experiment at a time.",
    "Masked language models such as BERT are trained differently. They hide some tokens in the middle of "
    "a text and predict them from both sides. This makes them good at understanding text, but they do not "
    "define a left-to-right probability for a whole sequence, so they cannot generate text by sampling one "
    "token after another. Autoregressive models are the ones that write.",
    "Encoder and decoder are words that describe where information can flow. An encoder lets every "
    "position see every other position, which suits tasks where the whole input is known in advance. A "
    "decoder lets each position see only the past, which is what generation needs. An encoder-decoder "
    "model combines both: the encoder reads the source, and the decoder writes the target while attending "
    "to the encoder's output.",
    "Numerical precision matters when training on modern hardware. Lower precision formats such as half "
    "precision and bfloat16 make training faster and use less memory, but they can overflow or lose small "
    "values. Mixed precision keeps a full precision copy of the weights and uses a scaling factor for the "
    "loss, so that small gradients survive the reduced range.",
    "Reproducibility deserves attention too. Fixing the random seeds of the data order, the weight "
    "initialization and the sampler makes an experiment repeatable, which is essential when comparing two "
    "settings. Without fixed seeds, a difference between two runs may simply be noise. With them, a "
    "reader can run the same code and obtain the same numbers.",
    "Every number in an experiment should come from code that anyone can run again. A claim such as this "
    "setting trains faster is only as good as the measurement behind it. Recording the configuration, the "
    "data version and the random seed alongside each result turns a one-off observation into a piece of "
    "evidence that others can check.",
    "Finally, it helps to remember what a language model is not. It does not look facts up in a database "
    "unless it is connected to one, and it does not know which of its statements are true. It produces "
    "text that is probable given its training data and its prompt. Understanding the mechanism, from the "
    "chain rule to the sampling loop, is the best protection against both overestimating and "
    "underestimating what such a model can do.",
    # More on data, models and measurement
    "A corpus is any collection of text used to train or test a model. Its contents shape everything the "
    "model learns. A model trained on recipes will write recipes, and a model trained on legal documents "
    "will sound like a lawyer. Before training, it is worth reading a few hundred lines of the corpus by "
    "hand, looking for duplicated passages, broken characters, and text that does not belong.",
    "Text files come in many encodings, and mixing them up produces strange symbols. The safest "
    "convention is to store every corpus as UTF-8 and to fail loudly when a file is not valid UTF-8, "
    "reporting the byte offset where decoding broke. Silently replacing bad bytes hides the problem and "
    "teaches the model to produce the replacement symbol.",
    "Downloading a public corpus is convenient, but the file on a server can change or disappear. A "
    "checksum, such as a SHA-256 hash of the file, records exactly which version an experiment used. If "
    "the downloaded file does not match the expected hash, the right response is to stop, delete the file, "
    "and tell the user, rather than to train on data nobody meant to use.",
    "A synthetic language is a toy language generated by a program. Its sentences are produced by "
    "random choices: which noun, which verb, whether to add an adjective or a clause. Because the program "
    "knows the probability of each choice, it also knows the exact probability of every sentence it "
    "writes. That makes synthetic languages ideal for testing whether a model has learned everything "
    "there is to learn.",
    "An n-gram model is fitted by counting, which takes seconds even on millions of tokens, and it needs "
    "no gradient descent at all. That speed makes it a good first baseline. If a neural model cannot beat "
    "a trigram model on the same data, something is wrong with the neural model, its data, or its "
    "training loop.",
    "The order of an n-gram model is the length of the sequences it counts. A unigram model ignores "
    "context entirely and only knows how frequent each token is. A bigram model knows which token tends "
    "to follow which. Each step up in order captures more structure, but the counts become sparser, and "
    "beyond some order the model begins to memorise its training text rather than to generalise.",
    "Add-k smoothing is the simplest remedy for unseen events: pretend that every possible next token was "
    "seen k extra times. It guarantees that no probability is zero, but with a large vocabulary it gives "
    "too much weight to the enormous number of events that never happen. Interpolation and backoff do "
    "better by trusting long contexts when they have been seen often and shorter contexts otherwise.",
    "Sampling from a trained model is a good way to see what it has learned. Early in training the "
    "samples look like random letters. A little later the model has learned common words and spaces. "
    "Later still, the words start to form phrases, and eventually the samples look like plausible "
    "sentences of the training language, with the occasional odd choice.",
    "Parameter count is a rough guide to a model's capacity. The embedding table has one row per "
    "vocabulary entry, and each transformer block holds the attention projections and the two layers of "
    "the feed-forward network. For a small character model most parameters sit in the blocks; for a large "
    "model with a big vocabulary, the embeddings can be a sizeable share.",
    "Throughput measures how many tokens a training run processes per second. It depends on the model "
    "size, the batch size, the context length, and the hardware. On a laptop processor a tiny model might "
    "process tens of thousands of tokens per second; a large model on a cluster of accelerators processes "
    "millions. Comparing throughput before and after a change shows whether the change was worth it.",
    "Batch size trades noise for speed. A small batch gives a noisy estimate of the gradient but allows "
    "many updates in a given time; a large batch gives a smoother estimate and uses the hardware more "
    "efficiently. The learning rate and the batch size interact, so when one changes, the other often "
    "needs to change as well.",
    "Dropout randomly switches off a fraction of the activations during training, which discourages the "
    "model from relying on any single feature. It helps when data is scarce and the model could memorise "
    "it. When data is plentiful and training is short, as with a synthetic language that can produce "
    "endless new sentences, dropout mostly slows learning down and is best left off.",
    "Weight decay pulls every weight gently toward zero at each step. It keeps the weights small, which "
    "tends to make the function smoother and the training more stable. In the AdamW optimizer the decay "
    "is applied directly to the weights rather than through the gradient, a detail that makes it behave "
    "more predictably.",
    "A learning curve plots the loss against the number of training steps or tokens. On a log scale the "
    "curve of a healthy run often looks almost like a straight line for a long stretch, then bends as the "
    "model approaches the limit of what it can learn. For the synthetic language the limit is known: it is "
    "the entropy rate, and the remaining distance to it is the model's true inefficiency.",
    # Worked examples in words
    "Consider how a character model reads the word tokenizer. After the letter t, many letters are "
    "possible. After to, fewer. After tok, the model that knows its vocabulary is nearly certain that "
    "en comes next, and after tokeniz, the ending is almost fixed. Most of the uncertainty in a word sits "
    "in its first one or two letters; the rest is spelling, which a trained model predicts with little "
    "doubt.",
    "The same text costs a different number of tokens under different tokenizers, but the information "
    "it contains does not change. If a sentence carries thirty bits of surprise for a model, those thirty "
    "bits are spread over thirty characters or over eight subword tokens. That is why bits per character "
    "is a fair common currency, while loss per token is only comparable between models that share a "
    "tokenizer.",
    "A confidence interval says how precisely a number has been measured. When we estimate an average "
    "from a sample, a different sample would give a slightly different answer. The interval is built so "
    "that, over many repetitions of the experiment, it contains the true value in a stated fraction of "
    "cases, usually ninety five percent. A narrow interval needs a large sample.",
    "Long-range dependencies are the cases where a token depends on something far back in the text. A "
    "closing quotation mark depends on the opening one, a pronoun depends on the noun it refers to, and "
    "the second half of a repeated phrase depends on the first half. Models that can use such "
    "dependencies gain most where they occur, and measuring the loss at exactly those positions shows "
    "whether a model has learned them.",
    "A repeated phrase is the easiest long-range pattern to exploit once a model knows the trick. The "
    "first time a random sequence of words appears, nothing can predict it. The second time, every token "
    "can be copied from the first occurrence. A model with induction heads pays for the sequence once; a "
    "model without them pays twice.",
    "Sentences in a well designed synthetic language can be parsed back exactly. Given a string, a parser "
    "finds every way the grammar could have produced it. If the grammar is unambiguous there is exactly "
    "one such derivation, and the probability of the string is the product of the probabilities of the "
    "choices along it. Enumerating a small version of the grammar and adding up the probabilities of all "
    "its strings should give exactly one.",
    "Tests for a learning system have to be designed with care. A good test can fail: it checks "
    "behaviour that a broken implementation would get wrong. For a language model that might mean "
    "checking that changing a future token leaves past predictions untouched, that the probabilities of "
    "every possible next token add up to one, or that a cached computation gives the same answer as a "
    "fresh one.",
    "Small experiments are most convincing when they compare two settings that differ in one thing only. "
    "Train the same model with and without the causal mask, with and without residual connections, or "
    "with two learning rates, and keep everything else fixed, including the random seed. The difference in "
    "the curves can then be attributed to the one change.",
)


def prose_paragraphs() -> tuple[str, ...]:
    """The paragraphs of the prose corpus, in order."""
    return _PARAGRAPHS


def prose_text() -> str:
    """The prose corpus as one string, each paragraph followed by a newline."""
    return "".join(p + "\n" for p in _PARAGRAPHS)

#!/usr/bin/env python3
"""Offline speech recognizer for clawlink's Voice Wake: audio in, one transcript per line out.

A small recognizer command built on pocketsphinx (PyPI; its US-English model ships inside the
package), usable as the voicewake feature's `command` source:

    recognize.py [--json] [--partials] [--triggers a,b] [--phrase TEXT]... (FILE.wav... | -)

- FILE.wav: any PCM WAV (16-bit; resampled to 16 kHz mono); "-": raw 16 kHz mono s16le PCM on
  standard input (e.g. `arecord -q -f S16_LE -r 16000 -c 1 -t raw | recognize.py -`).
  Speech is cut into utterances with pocketsphinx's voice-activity endpointer; each
  utterance gives one line.
- Output: the transcript as plain text, or with --json one object per line:
  {"text": "...", "final": true}; with --partials also {"text": "...", "final": false}
  while an utterance goes on.
- Triggers: --triggers (comma-separated), else CLAWLINK_VOICEWAKE_TRIGGERS (the JSON array
  the voicewake feature passes to its recognizer), else the gateway's defaults.
- --phrase (repeatable): expected commands. With phrases, the search is a JSGF grammar
  "[trigger] phrase | trigger", which recognises synthetic and accented speech far better
  than the general language model (measured: shared/reference/voice-recognition.md).
  Without phrases, the general English language model transcribes freely.
- Words missing from the pronouncing dictionary (e.g. "openclaw") are spelled as two
  dictionary words ("open" + "claw") when they split that way; otherwise the phrase is
  dropped with a warning on stderr.
- --check loads the model and exits (used by `cargo xtask peer install`).

Diagnostics go to stderr; stdout carries transcripts only.
"""

import argparse
import array
import json
import os
import re
import sys
import wave

DEFAULT_TRIGGERS = ["openclaw", "claude", "computer"]
RATE = 16000


def warn(message):
    print(f"recognize: {message}", file=sys.stderr, flush=True)


def load_pocketsphinx():
    try:
        import pocketsphinx  # noqa: F401
    except ImportError as error:
        warn(
            f"pocketsphinx is not importable ({error}); install it with "
            "`cargo xtask peer install` (pip install --target <prefix>/voice pocketsphinx)"
        )
        sys.exit(3)
    return pocketsphinx


def words_of(text):
    """Lowercase dictionary-style words: letters, digits and apostrophes."""
    return re.findall(r"[a-z0-9']+", text.lower().replace("\u2019", "'"))


def pronounce(decoder, word):
    """Phones for `word`: the dictionary's, or two dictionary words glued together."""
    phones = decoder.lookup_word(word)
    if phones:
        return phones
    for cut in range(2, len(word) - 1):
        left, right = decoder.lookup_word(word[:cut]), decoder.lookup_word(word[cut:])
        if left and right:
            decoder.add_word(word, f"{left} {right}", True)
            return decoder.lookup_word(word)
    return None


def usable(decoder, phrase):
    """The phrase as grammar words, or None when a word cannot be pronounced."""
    words = words_of(phrase)
    if not words:
        return None
    for word in words:
        if not pronounce(decoder, word):
            warn(f"no pronunciation for {word!r}: dropping {phrase!r}")
            return None
    return " ".join(words)


def grammar(triggers, phrases):
    def alternatives(items):
        return " | ".join(f"( {item} )" for item in items)

    return (
        "#JSGF V1.0;\n"
        "grammar voicewake;\n"
        f"<trigger> = {alternatives(triggers)};\n"
        f"<command> = {alternatives(phrases)};\n"
        "public <utterance> = [ <trigger> ] <command> | <trigger>;\n"
    )


def make_decoder(ps, triggers, phrases):
    decoder = ps.Decoder(samprate=RATE, loglevel="FATAL")
    if not phrases:
        for trigger in triggers:
            for word in words_of(trigger):
                pronounce(decoder, word)
        return decoder
    usable_triggers = [t for t in (usable(decoder, t) for t in triggers) if t]
    usable_phrases = [p for p in (usable(decoder, p) for p in phrases) if p]
    if not usable_triggers or not usable_phrases:
        warn("no trigger or no phrase can be pronounced; nothing to recognise")
        sys.exit(2)
    decoder.add_jsgf_string("voicewake", grammar(usable_triggers, usable_phrases))
    decoder.activate_search("voicewake")
    return decoder


def read_wav(path):
    """16 kHz mono 16-bit PCM from any 16-bit PCM WAV file."""
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        channels, rate = w.getnchannels(), w.getframerate()
        samples = array.array("h")
        samples.frombytes(w.readframes(w.getnframes()))
    if sys.byteorder == "big":
        samples.byteswap()
    if channels > 1:
        samples = array.array("h", samples[::channels])
    if rate != RATE:
        step = rate / RATE
        count = int(len(samples) / step)
        out = array.array("h", bytes(2 * count))
        last = len(samples) - 1
        for i in range(count):
            x = i * step
            j = int(x)
            frac = x - j
            nxt = samples[j + 1] if j < last else samples[j]
            out[i] = int(samples[j] * (1 - frac) + nxt * frac)
        samples = out
    return samples.tobytes()


class Emitter:
    def __init__(self, as_json):
        self.as_json = as_json
        self.last_partial = None

    def emit(self, text, final):
        text = text.strip()
        if not text:
            return
        if not final:
            if text == self.last_partial:
                return
            self.last_partial = text
        else:
            self.last_partial = None
        if self.as_json:
            line = json.dumps({"text": text, "final": final})
        elif final:
            line = text
        else:
            return
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def decode_stream(ps, decoder, chunks, emitter, partials):
    """Endpoints a stream of PCM chunks into utterances and decodes each."""
    endpointer = ps.Endpointer(sample_rate=RATE)
    frame_bytes = endpointer.frame_bytes
    pending = b""
    in_utterance = False
    frames = 0
    heard_any = False

    def feed(speech):
        nonlocal in_utterance, frames
        if not in_utterance:
            decoder.start_utt()
            in_utterance = True
            frames = 0
        decoder.process_raw(speech, False, False)
        frames += 1
        if partials and frames % 10 == 0:
            hyp = decoder.hyp()
            if hyp is not None:
                emitter.emit(hyp.hypstr, False)

    def finish():
        nonlocal in_utterance, heard_any
        if in_utterance:
            decoder.end_utt()
            in_utterance = False
            hyp = decoder.hyp()
            if hyp is not None and hyp.hypstr.strip():
                heard_any = True
                emitter.emit(hyp.hypstr, True)

    for chunk in chunks:
        pending += chunk
        while len(pending) >= frame_bytes:
            frame, pending = pending[:frame_bytes], pending[frame_bytes:]
            speech = endpointer.process(frame)
            if speech is not None:
                feed(speech)
            if in_utterance and not endpointer.in_speech:
                finish()
    speech = endpointer.end_stream(pending)
    if speech is not None:
        feed(speech)
    finish()
    return heard_any


def decode_whole(decoder, pcm, emitter):
    decoder.start_utt()
    decoder.process_raw(pcm, False, True)
    decoder.end_utt()
    hyp = decoder.hyp()
    if hyp is not None:
        emitter.emit(hyp.hypstr, True)


def silence(seconds):
    return bytes(2 * int(RATE * seconds))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="*", help="WAV files, or - for raw 16 kHz mono s16le PCM on stdin")
    parser.add_argument("--json", action="store_true", help="JSON lines {text, final}")
    parser.add_argument("--partials", action="store_true", help="also print non-final hypotheses (with --json)")
    parser.add_argument("--triggers", help="comma-separated trigger phrases")
    parser.add_argument("--phrase", action="append", default=[], help="an expected command (repeatable)")
    parser.add_argument("--check", action="store_true", help="load the model and exit")
    args = parser.parse_args()

    ps = load_pocketsphinx()
    if args.check:
        ps.Decoder(samprate=RATE, loglevel="FATAL")
        print(f"pocketsphinx ready (model {ps.get_model_path()})", flush=True)
        return 0
    if not args.inputs:
        parser.error("give WAV files, or - for raw PCM on standard input")

    if args.triggers:
        triggers = [t.strip() for t in args.triggers.split(",") if t.strip()]
    elif os.environ.get("CLAWLINK_VOICEWAKE_TRIGGERS"):
        triggers = [t for t in json.loads(os.environ["CLAWLINK_VOICEWAKE_TRIGGERS"]) if t.strip()]
    else:
        triggers = DEFAULT_TRIGGERS
    decoder = make_decoder(ps, triggers, args.phrase)
    emitter = Emitter(args.json)
    warn(f"listening for {', '.join(triggers)}" + (f" with {len(args.phrase)} phrases" if args.phrase else ""))

    for name in args.inputs:
        if name == "-":
            stream = iter(lambda: sys.stdin.buffer.read(3200), b"")
            decode_stream(ps, decoder, stream, emitter, args.partials)
            continue
        try:
            pcm = read_wav(name)
        except (OSError, ValueError, wave.Error) as error:
            warn(f"cannot read {name}: {error}")
            return 1
        # Silence around the clip gives the endpointer the context it needs.
        padded = silence(0.5) + pcm + silence(0.5)
        chunks = (padded[i:i + 3200] for i in range(0, len(padded), 3200))
        if not decode_stream(ps, decoder, chunks, emitter, args.partials):
            decode_whole(decoder, pcm, emitter)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Builds slimbert's real offline data from Debian and npm packages, deterministically.

  prepare_data.py OUT_DIR --spam-dir DIR --apt-lists DIR [--linux-doc DIR] [--python-doc DIR]

Writes
  OUT_DIR/corpus/*.txt       MLM corpus: plain text, documents separated by blank lines
  OUT_DIR/tasks/T/{train,dev,test}.tsv  labelled tasks with a header row
  OUT_DIR/manifest.json      counts per file, split and class, and a sha256 per file
Task dev/test texts are kept out of the corpus. Called by scripts/prepare-data.sh, which
installs the packages first. Standard library only.
"""
import argparse
import collections
import glob
import gzip
import hashlib
import html
import html.parser
import json
import os
import random
import re
import subprocess
import sys

SEED = 20261122
WS = re.compile(r"\s+")


def norm(text):
    return WS.sub(" ", text).strip()


def stable_hash(key):
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16)


def split_of(key, dev=0.1, test=0.1):
    """Deterministic split by a key's hash: the same key always lands in the same split."""
    r = (stable_hash(key) % 10000) / 10000
    return "test" if r < test else "dev" if r < test + dev else "train"


def tsv_field(text):
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


# ---- sources ------------------------------------------------------------------------------------

def gcide_documents(path="/usr/share/dictd/gcide.dict.dz"):
    """Webster's 1913 definitions: prose paragraphs of at least 8 words, markup removed."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    docs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [l.strip() for l in block.splitlines()]
        prose = norm(" ".join(l for l in lines if l))
        prose = re.sub(r"\[[^\]]*\]", " ", prose)   # etymologies
        prose = re.sub(r"[{}\\]", "", prose)
        prose = norm(prose)
        if len(prose.split()) >= 8:
            docs.append(prose)
    return docs


def wordnet_synsets(root="/usr/share/wordnet"):
    """(offset-key, lexicographer class, gloss) for every synset."""
    lexnames = {}
    lexfile = os.path.join(root, "lexnames")
    names = ["adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
             "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
             "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
             "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
             "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
             "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
             "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
             "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl"]
    if os.path.exists(lexfile):
        for line in open(lexfile):
            parts = line.split()
            if len(parts) >= 2:
                lexnames[int(parts[0])] = parts[1]
    else:  # WordNet 3.0's fixed list (lexnames(5WN))
        lexnames = dict(enumerate(names))
    out = []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in open(os.path.join(root, "data." + pos), encoding="utf-8", errors="replace"):
            if line.startswith("  ") or " | " not in line:
                continue
            head, gloss = line.split(" | ", 1)
            fields = head.split()
            gloss = norm(gloss)
            # The definition part: before the first quoted example.
            definition = norm(gloss.split('; "')[0].split(' "')[0]).rstrip(";")
            if len(definition.split()) < 3:
                continue
            out.append((pos + fields[0], lexnames[int(fields[1])], definition, gloss))
    return out


class TextOfHtml(html.parser.HTMLParser):
    """Paragraph text of Sphinx HTML pages: <p>, <li>, <dd>, <td> contents, no code."""
    KEEP = {"p", "li", "dd", "td", "dt"}
    SKIP = {"pre", "code", "script", "style", "nav", "head", "title"}

    def __init__(self):
        super().__init__()
        self.paras, self.buf, self.depth, self.skip = [], [], 0, 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.KEEP:
            self.flush()
            self.depth += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.KEEP:
            self.flush()
            self.depth = max(0, self.depth - 1)

    def handle_data(self, data):
        if self.depth and not self.skip:
            self.buf.append(data)

    def flush(self):
        text = norm("".join(self.buf))
        self.buf = []
        if len(text.split()) >= 6:
            self.paras.append(text)


def html_documents(root):
    docs = []
    for path in sorted(glob.glob(os.path.join(root, "**", "*.html"), recursive=True)):
        if "/_" in path or "genindex" in path or "search.html" in path:
            continue
        p = TextOfHtml()
        try:
            p.feed(open(path, encoding="utf-8", errors="replace").read())
        except Exception:  # malformed page: skip it, the corpus is large
            continue
        p.flush()
        if p.paras:
            docs.append("\n".join(p.paras))
    return docs


def apt_file(path):
    return subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], check=True,
                          capture_output=True).stdout.decode("utf-8", "replace")


def debian_packages(lists):
    """package -> (section, long description) from Packages + Translation-en of a scratch list dir."""
    sections, md5s = {}, {}
    for path in sorted(glob.glob(os.path.join(lists, "*_main_binary-amd64_Packages*"))):
        for stanza in apt_file(path).split("\n\n"):
            fields = dict(re.findall(r"^([A-Za-z0-9-]+): ?(.*)$", stanza, re.M))
            if "Package" in fields and "Section" in fields:
                sections[fields["Package"]] = fields["Section"].split("/")[-1]
                md5s[fields["Package"]] = fields.get("Description-md5", "")
    descriptions = {}
    for path in sorted(glob.glob(os.path.join(lists, "*_main_i18n_Translation-en*"))):
        for stanza in apt_file(path).split("\n\n"):
            m = re.search(r"^Package: (.*)$", stanza, re.M)
            d = re.search(r"^Description-en: (.*(?:\n .*)*)", stanza, re.M)
            if not m or not d:
                continue
            lines = d.group(1).split("\n")
            body = [l[1:] for l in lines[1:]]
            body = [("" if l.strip() == "." else l) for l in body]
            text = norm(lines[0]) + ". " + norm(" ".join(body))
            descriptions[m.group(1)] = text.strip()
    return {p: (sections[p], descriptions[p]) for p in sorted(sections) if p in descriptions}


def spam_messages(root):
    """(file key, label, text) for the SpamAssassin corpus: subject + body, HTML stripped."""
    out = []
    for sub in sorted(os.listdir(os.path.join(root, "data"))):
        d = os.path.join(root, "data", sub)
        if not os.path.isdir(d):
            continue
        label = "spam" if sub.startswith("spam") else "ham"
        for name in sorted(os.listdir(d)):
            raw = open(os.path.join(d, name), "rb").read().decode("latin-1")
            head, _, body = raw.partition("\n\n")
            subject = re.search(r"^Subject: (.*)$", head, re.M | re.I)
            body = re.sub(r"<[^>]+>", " ", body)
            body = html.unescape(body)
            body = re.sub(r"[=-]{3,}|_{3,}", " ", body)
            text = norm((subject.group(1) if subject else "") + " . " + body)[:2000]
            if len(text.split()) >= 3:
                out.append((sub + "/" + name, label, text))
    return out


def bible_pairs():
    """Aligned (KJV, WEB) verses keyed by (book number, chapter, verse)."""
    kjv = {}
    books = []
    for line in subprocess.run(["bible", "-f", "Ge1:1-Re22:21"], capture_output=True, check=True,
                               text=True).stdout.splitlines():
        m = re.match(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$", line)
        if not m:
            continue
        if not books or books[-1] != m.group(1):
            books.append(m.group(1))
        kjv[(len(books), int(m.group(2)), int(m.group(3)))] = norm(m.group(4))
    web = {}
    wbooks = []
    vpl = subprocess.run(["mod2vpl", "engWEB2015eb", "1"], capture_output=True, text=True).stdout
    for line in vpl.splitlines():
        m = re.match(r"^(.+?) (\d+):(\d+) (.*)$", line)
        if not m or m.group(2) == "0" or m.group(3) == "0":
            continue
        if not wbooks or wbooks[-1] != m.group(1):
            wbooks.append(m.group(1))
        text = re.sub(r"<note.*?</note>", " ", m.group(4))
        text = norm(html.unescape(re.sub(r"<[^>]+>", " ", text)))
        text = re.sub(r" ([,.;:?!])", r"\1", text)
        if text:
            web[(len(wbooks), int(m.group(2)), int(m.group(3)))] = text
    keys = sorted(k for k in kjv if k in web and k[0] <= 66)
    return [(k, kjv[k], web[k]) for k in keys]


# ---- tasks --------------------------------------------------------------------------------------

def write_task(out_dir, name, rows, header, counts):
    """rows: (split, fields...) -> OUT/tasks/name/{train,dev,test}.tsv"""
    d = os.path.join(out_dir, "tasks", name)
    os.makedirs(d, exist_ok=True)
    by_split = collections.defaultdict(list)
    for split, *fields in rows:
        by_split[split].append(fields)
    for split in by_split:  # source order would put all of one class first
        random.Random(SEED).shuffle(by_split[split])
    for split in ("train", "dev", "test"):
        path = os.path.join(d, split + ".tsv")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write("\t".join(header) + "\n")
            for fields in by_split[split]:
                f.write("\t".join(tsv_field(x) for x in fields) + "\n")
        os.replace(path + ".tmp", path)
        counts[f"tasks/{name}/{split}"] = dict(collections.Counter(fields[-1] for fields in by_split[split]),
                                              total=len(by_split[split]))


def cap(rows, limits, seed):
    """At most limits[split] rows per split, sampled deterministically."""
    rng = random.Random(seed)
    out = []
    for split in ("train", "dev", "test"):
        part = [r for r in rows if r[0] == split]
        rng.shuffle(part)
        out += part[:limits[split]]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--spam-dir", required=True)
    ap.add_argument("--apt-lists", required=True)
    ap.add_argument("--linux-doc", default="/usr/share/doc/linux-doc-6.1/html")
    ap.add_argument("--python-doc", default="/usr/share/doc/python3.11/html")
    ap.add_argument("--debsec-classes", type=int, default=10)
    a = ap.parse_args()
    counts = {}
    held_out = set()  # dev/test texts of the tasks: never in the MLM corpus
    limits = {"train": 20000, "dev": 2000, "test": 2000}

    print("spam ...", file=sys.stderr)
    rows = [(split_of("spam:" + key), text, label) for key, label, text in spam_messages(a.spam_dir)]
    write_task(a.out, "spam", rows, ["sentence", "label"], counts)
    held_out.update(r[1] for r in rows if r[0] != "train")

    print("debsec ...", file=sys.stderr)
    pkgs = debian_packages(a.apt_lists)
    top = [s for s, _ in collections.Counter(s for s, _ in pkgs.values()).most_common(a.debsec_classes)]
    rows = [(split_of("debsec:" + p), d, s) for p, (s, d) in pkgs.items() if s in top]
    rows = cap(rows, limits, SEED)
    write_task(a.out, "debsec", rows, ["sentence", "label"], counts)
    held_out.update(r[1] for r in rows if r[0] != "train")

    print("wngloss ...", file=sys.stderr)
    synsets = wordnet_synsets()
    rows = cap([(split_of("wn:" + key), definition, lex) for key, lex, definition, _ in synsets], limits, SEED)
    write_task(a.out, "wngloss", rows, ["sentence", "label"], counts)
    held_out.update(r[1] for r in rows if r[0] != "train")

    print("para ...", file=sys.stderr)
    verses = bible_pairs()
    by_chapter = collections.defaultdict(list)
    for k, kjv, web in verses:
        by_chapter[k[:2]].append((k, kjv, web))
    rng = random.Random(SEED)
    rows = []
    for chapter, vs in sorted(by_chapter.items()):
        split = split_of("para:%d:%d" % chapter)  # whole chapters per split: no verse leaks
        for i, (k, kjv, web) in enumerate(vs):
            if len(vs) > 1 and rng.random() < 0.5:
                j = rng.choice([x for x in range(len(vs)) if x != i])
                rows.append((split, kjv, vs[j][2], "0"))
            else:
                rows.append((split, kjv, web, "1"))
    rows = cap(rows, limits, SEED)
    write_task(a.out, "para", rows, ["sentence1", "sentence2", "label"], counts)

    print("corpus ...", file=sys.stderr)
    corpus_dir = os.path.join(a.out, "corpus")
    os.makedirs(corpus_dir, exist_ok=True)
    sources = {
        "gcide": gcide_documents(),
        "wordnet": [g for _, _, d, g in synsets if d not in held_out],
        "debian": [d for p, (s, d) in pkgs.items() if d not in held_out],
        "linux-doc": html_documents(a.linux_doc),
        "python-doc": html_documents(a.python_doc),
    }
    # WordNet glosses are short: group 20 per document so that packing sees real context.
    sources["wordnet"] = ["\n".join(sources["wordnet"][i:i + 20]) for i in range(0, len(sources["wordnet"]), 20)]
    for name, docs in sources.items():
        path = os.path.join(corpus_dir, name + ".txt")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            for d in docs:
                f.write(d.strip() + "\n\n")
        os.replace(path + ".tmp", path)
        counts["corpus/" + name] = {"documents": len(docs), "words": sum(len(d.split()) for d in docs)}

    files = {}
    for root, _, names in os.walk(a.out):
        for n in sorted(names):
            if n.endswith((".txt", ".tsv")) and n != "vocab.txt":
                p = os.path.join(root, n)
                files[os.path.relpath(p, a.out)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    manifest = {"seed": SEED, "counts": counts, "sha256": dict(sorted(files.items()))}
    with open(os.path.join(a.out, "manifest.json.tmp"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    os.replace(os.path.join(a.out, "manifest.json.tmp"), os.path.join(a.out, "manifest.json"))
    for key, c in counts.items():
        print(f"{key:24} {json.dumps(c)}")


if __name__ == "__main__":
    main()

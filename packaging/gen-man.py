#!/usr/bin/env python3
"""Generates the manual pages in man/ from include/asyncfutex.h.

    packaging/gen-man.py            rewrite man/man3/afx_*.3 and man/man7/asyncfutex.7
    packaging/gen-man.py --check    exit 1 (listing the differences) unless
                                    the committed pages are what it would write

One section-3 page per function the header declares, from the `//` doc
comment above its prototype (the same text cbindgen copies from the Rust
doc comments in src/ffi/): NAME (the first sentence), SYNOPSIS (the
prototype), DESCRIPTION, RETURN VALUE (the paragraphs that start with
"Returns", or the sentence that says what it returns), ERRORS (the error
codes the doc names, with the doc's explanation), NOTES (the "# Safety"
section) and SEE ALSO (the functions the doc mentions, its family, and
asyncfutex(7)). asyncfutex(7) is the overview: the header's top comment,
the constants and every function by family. tests/man_pages.rs runs
--check and renders every page with groff -ww.
"""

import difflib
import errno
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = os.path.join(ROOT, "include", "asyncfutex.h")
MAN = os.path.join(ROOT, "man")

MANUAL = "asyncfutex Manual"

# Families, for SEE ALSO and the overview (by name prefix, first match).
FAMILIES = [
    ("afx_mutex_", "Cross-process mutex"),
    ("afx_sem_", "Cross-process counting semaphore"),
    ("afx_event_", "Cross-process event count"),
    ("afx_chan_", "Single-producer single-consumer channel"),
    ("afx_waitv", "Futex words"),
    ("afx_ack_index", "Futex words"),
    ("afx_version", "Library and backend"),
    ("afx_backend", "Library and backend"),
    ("afx_select_backend", "Library and backend"),
    ("afx_strerror", "Library and backend"),
    ("afx_", "Futex words"),
]

FAMILY_ORDER = [
    "Futex words",
    "Library and backend",
    "Cross-process mutex",
    "Cross-process counting semaphore",
    "Cross-process event count",
    "Single-producer single-consumer channel",
]

# What an error code means when the doc names it without an explanation.
GENERIC_ERRORS = {
    "EINVAL": "An invalid argument: a NULL handle or pointer, a misaligned address, an unknown flag or value.",
    "ETIMEDOUT": "The timeout expired.",
    "EINTR": "A signal handler ran.",
    "EFAULT": "The memory is not mapped or not readable.",
    "EAGAIN": "Not now: see RETURN VALUE.",
    "EBUSY": "Busy: see RETURN VALUE.",
    "ENOMEM": "Out of memory, or a thread could not be started.",
    "EMFILE": "The per-process limit on open file descriptors was reached.",
    "ENFILE": "The system-wide limit on open files was reached.",
    "ENOTRECOVERABLE": "An internal error (a caught panic), or a mutex that is not recoverable.",
    "EPERM": "Not permitted: see RETURN VALUE.",
    "EPROTO": "The shared state is not initialised or has another layout version.",
    "EOVERFLOW": "The count would overflow.",
    "EMSGSIZE": "The frame or buffer size does not fit: see RETURN VALUE.",
    "ENOSYS": "Not supported by this kernel or backend.",
    "EOPNOTSUPP": "Not supported by this kernel or backend.",
    "EIO": "The backend failed: see RETURN VALUE.",
    "EBADF": "A bad file descriptor.",
}


def family(name):
    for prefix, title in FAMILIES:
        if name.startswith(prefix):
            return title
    raise ValueError(name)


# ---- parsing the header ------------------------------------------------------

PROTO = re.compile(r"^(?P<ret>[A-Za-z_][\w ]*?[\s*]+)(?P<name>afx_\w+)\((?P<params>.*)\);$")
DEFINE = re.compile(r"^#define (?P<name>AFX_\w+) (?P<value>.+)$")
STRUCT_END = re.compile(r"^\} (?P<name>\w+);$")


def parse_header(text):
    """Returns (top comment lines, [(name, ret, params, doc lines)],
    [(define, value, doc)], {struct name: field lines})."""
    lines = text.split("\n")
    top = []
    i = 0
    if lines and lines[0].startswith("/*"):
        while not lines[i].rstrip().endswith("*/"):
            i += 1
        for line in lines[1:i]:
            line = line.strip()
            top.append(line[2:] if line.startswith("* ") else line.lstrip("*"))
    functions, defines, structs = [], [], {}
    doc, body = [], None
    pending = None
    for line in lines[i + 1 :]:
        stripped = line.strip()
        if body is not None:  # inside a typedef struct
            if STRUCT_END.match(stripped):
                structs[STRUCT_END.match(stripped).group("name")] = body
                body = None
            elif stripped and not stripped.startswith("//"):
                body.append(stripped)
            continue
        if stripped.startswith("//"):
            doc.append(stripped[3:] if stripped.startswith("// ") else stripped[2:])
            continue
        if stripped == "typedef struct {":
            body = []
            doc = []
            continue
        if pending is not None:  # a prototype continued on the next line
            stripped = pending + " " + stripped
            pending = None
        m = PROTO.match(stripped)
        if m:
            params = [p.strip() for p in m.group("params").split(",")]
            functions.append((m.group("name"), m.group("ret").strip(), params, doc))
        elif stripped.startswith(("afx_", "int ", "void ", "const ", "uint")) and "(" in stripped and not stripped.endswith(";"):
            pending = stripped
            continue
        else:
            d = DEFINE.match(stripped)
            if d and doc:
                defines.append((d.group("name"), d.group("value"), doc))
        doc = []
    return top, functions, defines, structs


def paragraphs(lines):
    """Splits doc lines into paragraphs (lists of lines)."""
    paras, cur = [], []
    for line in lines:
        if line.strip():
            cur.append(line)
        elif cur:
            paras.append(cur)
            cur = []
    if cur:
        paras.append(cur)
    return paras


def param_name(param):
    m = re.search(r"(\w+)$", param)
    return m.group(1) if m and param != "void" else None


# ---- markdown-ish text to roff -----------------------------------------------

def roff_escape(text):
    out = []
    for ch in text.replace("\\", "\\e"):
        if ord(ch) > 127:
            out.append({"\u2014": "\\(em", "\u2013": "\\(en", "\u00d7": "\\(mu"}.get(ch, "\\[u%04X]" % ord(ch)))
        else:
            out.append(ch)
    return "".join(out)


FUNCTIONS = set()


def inline(text, params):
    """`code` -> bold (parameters italic, functions with their section),
    *emphasis* -> italic."""
    out = []
    parts = re.split(r"(`[^`]*`)", text)
    for k, part in enumerate(parts):
        if k % 2:
            code = part[1:-1]
            esc = roff_escape(code).replace("-", "\\-")
            if code in params:
                out.append("\\fI%s\\fP" % esc)
            elif code in FUNCTIONS and not parts[k + 1].startswith("("):
                out.append("\\fB%s\\fP(3)" % esc)
            else:
                out.append("\\fB%s\\fP" % esc)
        else:
            part = part.replace("at the top of this header", "in asyncfutex(7)")
            esc = roff_escape(part)
            esc = re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"\\fI\1\\fP", esc)
            esc = esc.replace("asyncfutex(7)", "\\fBasyncfutex\\fP(7)")
            out.append(esc)
    return "".join(out)


def roff_lines(text_lines, params):
    """Source lines joined and re-broken one sentence per line (so groff
    sees the sentence ends); no line starts with . or '."""
    text = " ".join(l.strip() for l in text_lines)
    out = []
    for sentence in re.split(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.!?])\s+(?=[A-Z`*\"(])", text):
        line = inline(sentence, params)
        if line.startswith((".", "'")):
            line = "\\&" + line
        out.append(line)
    return out


def render_paragraph(para, params):
    """A paragraph: plain text, or a list ("- " items), or text ending in
    a list."""
    out = []
    items, text = [], []
    for line in para:
        if line.startswith("- "):
            items.append([line[2:]])
        elif items and line.startswith("  "):
            items[-1].append(line.strip())
        elif items:  # text after a list: part of the last item
            items[-1].append(line.strip())
        else:
            text.append(line)
    if text:
        out.append(".PP")
        out.extend(roff_lines(text, params))
    for item in items:
        out.append(".IP \\(bu 2")
        out.extend(roff_lines(item, params))
    return out


def sentences(para_text):
    """Splits text at sentence ends ('. ' followed by a capital or a `)."""
    parts = re.split(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.)])\s+(?=[A-Z`(])", para_text)
    return [p for p in parts if p]


# ---- one function ------------------------------------------------------------

ERROR_CODE = re.compile(r"`-?(E[A-Z]+)`")
CODE_RUN = re.compile(r"(?:`-?E[A-Z]+`\s*/\s*)*`-?E[A-Z]+`")


def units(paras):
    """The paragraphs as (is_list_item, text) units."""
    out = []
    for para in paras:
        text, items = [], []
        for line in para:
            if line.startswith("- "):
                items.append([line[2:]])
            elif items:
                items[-1].append(line.strip())
            else:
                text.append(line.strip())
        if text:
            out.append((False, " ".join(text)))
        out.extend((True, " ".join(i)) for i in items)
    return out


def balanced(text, start):
    """The text inside the parenthesis opening at text[start], or None."""
    depth = 0
    for k in range(start, len(text)):
        if text[k] == "(":
            depth += 1
        elif text[k] == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1 : k]
    return None


CODE_LIST = r"e\.g\.|`-?E[A-Z]+`|[\s,/]|or|and"


def enclosing_clause(text, pos):
    """For a code inside a parenthesis that only lists codes ("cannot run
    (`ENOSYS`, `EPERM`)"), the clause before that parenthesis, back to a
    ',', ';' or ':' outside parentheses; otherwise None."""
    depth = 0
    for k in range(pos - 1, -1, -1):
        if text[k] == ")":
            depth += 1
        elif text[k] == "(":
            if depth == 0:
                inner = balanced(text, k)
                if inner is None or re.sub(CODE_LIST, "", inner):
                    return None
                depth2, j = 0, k - 1
                while j >= 0:
                    if text[j] == ")":
                        depth2 += 1
                    elif text[j] == "(":
                        depth2 -= 1
                    elif depth2 == 0 and text[j] in ",;:":
                        break
                    j -= 1
                clause = text[j + 1 : k].strip()
                return clause or None
            depth -= 1
    return None


def explain_errors(paras):
    """[(code, explanation or None)] in order of first mention. A code (or
    codes joined by '/') followed by '(...)' takes that as its explanation,
    unless it only lists codes; a list item that starts with a code
    explains it with the rest of the item; any other code in a list item
    takes the whole item; other codes have none."""
    found, order = {}, []
    for is_item, text in units(paras):
        for m in CODE_RUN.finditer(text):
            if re.search(r"\b[Nn]ever\s+(returns\s+)?$", text[: m.start()]):
                continue  # "never returns `-EAGAIN`"
            codes = [c for c in ERROR_CODE.findall(m.group(0)) if hasattr(errno, c)]
            if not codes:
                continue  # not an errno name (`EPOLLIN`)
            why = None
            rest = text[m.end():]
            lead = len(rest) - len(rest.lstrip())
            if rest[lead:lead + 1] == "(":
                inner = balanced(rest, lead)
                if inner and re.sub(CODE_LIST, "", inner):
                    why = inner
            if why is None:
                why = enclosing_clause(text, m.start())
            if why is None and is_item:
                if m.start() == 0 and rest.startswith(":"):
                    why = rest[1:].strip()
                else:
                    why = text
            for code in codes:
                if code not in found:
                    found[code] = None
                    order.append(code)
                if why and not found[code]:
                    found[code] = why.strip().rstrip(";,.")
    return [(code, found[code]) for code in order]


def short_summary(text):
    """The first sentence, without parentheticals, up to a ':' or ';' and
    without a trailing ", or -EXXX"; lower-cased first letter."""
    first = sentences(text)[0]
    while "(" in first:
        at = first.index("(")
        inner = balanced(first, at)
        if inner is None:
            break
        first = (first[:at].rstrip() + first[at + len(inner) + 2 :])
    first = re.split(r":\s|;\s", first)[0]
    first = re.sub(r",? or `-E[A-Z]+`", "", first)
    first = re.sub(r"`([^`]*)`", r"\1", first).replace("*", "").strip().rstrip(".,")
    if first[:2] != first[:2].upper():
        first = first[0].lower() + first[1:]
    return first


def function_page(name, ret, params, doc, all_names, version):
    pnames = {p for p in (param_name(x) for x in params) if p}
    paras = paragraphs(doc)
    safety = []
    for at, para in enumerate(paras):
        if para[0] == "# Safety":
            rest = [para[1:]] if para[1:] else []
            paras, safety = paras[:at], rest + paras[at + 1 :]
            break

    desc, retval, errors = [], [], []
    in_ret = False
    for para in paras:
        first = para[0]
        if first.startswith("Errors"):
            errors.append(para)
            in_ret = False
        elif first.startswith("Returns"):
            retval.append(para)
            in_ret = True
        elif in_ret and first.startswith("- "):
            retval.append(para)
        else:
            desc.append(para)
            in_ret = False

    # No paragraph says what it returns: take the sentences of the first
    # paragraph from the one that does ("Returns ...", "...: returns ...").
    if not retval and ret != "void" and desc:
        text = " ".join(l.strip() for l in desc[0])
        parts = sentences(text)
        for k, s in enumerate(parts):
            if re.match(r"Returns\b", s) or re.search(r":\s+returns\b", s) or "NULL + errno" in s:
                if k == 0:
                    retval.append([" ".join(parts)])  # all of it says what it returns
                else:
                    desc[0] = [" ".join(parts[:k])]
                    retval.append([" ".join(parts[k:])])
                break
    if not retval and ret != "void" and desc:
        # A noun-phrase summary ("The eventfd of ..., or `-EINVAL`.") is the
        # return value itself.
        retval.append(desc[0])

    summary = short_summary(" ".join(l.strip() for l in (paras[0] if paras else [name])))

    out = []
    out.append('.\\" Generated by packaging/gen-man.py from include/asyncfutex.h: do not edit.')
    out.append('.TH %s 3 "" "asyncfutex %s" "%s"' % (name.upper(), version, MANUAL))
    out.append(".SH NAME")
    out.append("%s \\- %s" % (name, roff_escape(summary).replace("-", "\\-")))
    out.append(".SH LIBRARY")
    out.append("asyncfutex (\\fIlibasyncfutex\\fP, \\fI\\-lasyncfutex\\fP)")
    out.append(".SH SYNOPSIS")
    out.append(".nf")
    out.append(".B #include <asyncfutex.h>")
    out.append(".PP")
    out.append(synopsis(name, ret, params))
    out.append(".fi")
    if any("afx_wait_entry" in p for p in params):
        out.extend(struct_synopsis("afx_wait_entry"))
    out.append(".SH DESCRIPTION")
    for para in desc:
        out.extend(render_paragraph(para, pnames))
    out.append(".SH RETURN VALUE")
    if ret == "void":
        out.append("None.")
    else:
        for para in retval:
            out.extend(render_paragraph(para, pnames))
    codes = explain_errors(retval + errors)
    if codes:
        out.append(".SH ERRORS")
        for para in errors:  # the doc's introduction to its list of errors
            intro = [l for l in para if not l.startswith(("- ", " "))]
            if intro and not intro[0].startswith("- "):
                out.append(".PP")
                out.extend(roff_lines(intro, pnames))
        for code, why in codes:
            out.append(".TP")
            out.append(".B %s" % code)
            if why:
                lines = roff_lines([why], pnames)
                if lines[0][:1].islower():
                    lines[0] = lines[0][0].upper() + lines[0][1:]
                if not lines[-1].endswith("."):
                    lines[-1] += "."
                out.extend(lines)
            else:
                out.append(GENERIC_ERRORS.get(code, "See RETURN VALUE."))
    if safety:
        out.append(".SH NOTES")
        out.append("The caller must ensure (anything else is undefined behaviour):")
        for para in safety:
            out.extend(render_paragraph(para, pnames))
    out.append(".SH SEE ALSO")
    out.extend(see_also(name, doc, all_names))
    return "\n".join(out) + "\n"


def synopsis(name, ret, params):
    """The prototype in man-pages style: types bold, parameter names italic."""
    head = ret + ("" if ret.endswith("*") else " ") + name + "("
    pieces = ["\\fB%s\\fP" % roff_escape(head)]
    for k, param in enumerate(params):
        pname = param_name(param)
        sep = ", " if k + 1 < len(params) else ""
        if pname:
            ptype = param[: -len(pname)]
            pieces.append("\\fB%s\\fP\\fI%s\\fP" % (roff_escape(ptype), pname))
        else:
            pieces.append("\\fB%s\\fP" % roff_escape(param))
        if sep:
            pieces.append("\\fB,\\fP ")
    pieces.append("\\fB);\\fP")
    return "".join(pieces)


STRUCTS = {}


def struct_synopsis(type_name):
    fields = STRUCTS.get(type_name)
    if not fields:
        return []
    out = [".PP", ".nf", ".B typedef struct {"]
    for field in fields:
        out.append(".BI \"    %s\"" % roff_escape(field).replace('"', '\\(dq'))
    out.append(".BI \"} %s;\"" % type_name)
    out.append(".fi")
    return out


def see_also(name, doc, all_names):
    mentioned = []
    for m in re.finditer(r"\bafx_\w+", " ".join(doc)):
        ref = m.group(0)
        if ref in all_names and ref != name and ref not in mentioned:
            mentioned.append(ref)
    # Its family's open/close (or new/free) and the family members it names.
    fam = family(name)
    for ref in all_names:
        if ref != name and family(ref) == fam and ref.endswith(("_new", "_free", "_open", "_close")) and ref not in mentioned:
            mentioned.append(ref)
    refs = sorted(mentioned) + ["asyncfutex"]
    out = []
    for k, ref in enumerate(refs):
        section = "7" if ref == "asyncfutex" else "3"
        out.append(".BR %s (%s)%s" % (ref, section, "," if k + 1 < len(refs) else ""))
    return out


# ---- the overview ------------------------------------------------------------

def overview_page(top, functions, defines, version):
    out = []
    out.append('.\\" Generated by packaging/gen-man.py from include/asyncfutex.h: do not edit.')
    out.append('.TH ASYNCFUTEX 7 "" "asyncfutex %s" "%s"' % (version, MANUAL))
    out.append(".SH NAME")
    first = top[0] if top else "asyncfutex"
    summary = first.split("\u2014", 1)[-1].strip().rstrip(".")
    out.append("asyncfutex \\- %s" % roff_escape(summary))
    out.append(".SH SYNOPSIS")
    out.append(".nf")
    out.append(".B #include <asyncfutex.h>")
    out.append(".B #include <asyncfutex.hpp>    /* C++17 wrapper, header only */")
    out.append(".fi")
    out.append(".PP")
    out.append("Link with \\fI\\-lasyncfutex\\fP, or use")
    out.append(".B pkg\\-config \\-\\-cflags \\-\\-libs asyncfutex")
    out.append("(add")
    out.append(".B \\-\\-static")
    out.append("for a static link), or CMake's")
    out.append(".B find_package(asyncfutex)")
    out.append("with the targets")
    out.append(".BR asyncfutex::asyncfutex ,")
    out.append(".BR asyncfutex::asyncfutex_static ,")
    out.append(".B asyncfutex::asyncfutex_cpp")
    out.append("and")
    out.append(".BR asyncfutex::asyncfutex_cpp_static .")
    out.append(".SH DESCRIPTION")
    for k, para in enumerate(paragraphs(top[1:])):
        # "Topic: text" paragraphs become subsections.
        m = re.match(r"^([A-Z][\w ]*?|EINTR):\s+(.*)$", para[0])
        if m and len(m.group(1)) < 24:
            out.append(".SS %s" % m.group(1))
            para = [m.group(2)[:1].upper() + m.group(2)[1:]] + para[1:]
        out.extend(render_paragraph(para, set()))
    for title in FAMILY_ORDER:
        members = [f for f in functions if family(f[0]) == title]
        if not members:
            continue
        out.append(".SS Functions: %s" % title)
        out.append(".PD 0")
        for fname, _, _, doc in members:
            first = sentences(" ".join(l.strip() for l in (paragraphs(doc) or [[fname]])[0]))[0]
            out.append(".TP")
            out.append(".BR %s (3)" % fname)
            out.append(inline(first, set()))
        out.append(".PD")
        out.append(".PP")
    out.append(".SS Constants")
    for dname, value, doc in defines:
        out.append(".TP")
        out.append(".BR %s \" (%s)\"" % (dname, roff_escape(value).replace('"', "")))
        out.extend(roff_lines(doc, set()))
    out.append(".SH ENVIRONMENT")
    for var, text in [
        ("AFX_BACKEND", "\\fBio_uring\\fP, \\fBthread\\fP or \\fBauto\\fP: the backend a process starts "
         "(\\fBafx_select_backend\\fP(3) takes precedence)."),
        ("AFX_URING_SUBMIT", "\\fBthread\\fP: one library thread submits every io_uring wait "
         "(no \\fBEINTR\\fP in the arming thread; see \\fBEINTR\\fP above)."),
        ("AFX_THREAD_SIGNAL", "The signal the thread backend's per-wait mode uses to cancel a wait "
         "(\\fIn\\fP, \\fBSIGRTMIN+\\fP\\fIn\\fP, \\fBSIGRTMAX\\-\\fP\\fIn\\fP or \\fBnone\\fP)."),
    ]:
        out.append(".TP")
        out.append(".B %s" % var)
        out.append(text)
    out.append(".SH SEE ALSO")
    refs = ["afx_new", "afx_wait_async", "afx_ack", "afx_wake", "afx_waitv", "afx_mutex_open",
            "afx_sem_open", "afx_event_open", "afx_chan_open"]
    refs = [r for r in refs if any(f[0] == r for f in functions)]
    for r in refs:
        out.append(".BR %s (3)," % r)
    out.append(".BR futex (2),")
    out.append(".BR eventfd (2),")
    out.append(".BR epoll (7)")
    return "\n".join(out) + "\n"


# ---- main ----------------------------------------------------------------------

def generate():
    with open(HEADER, encoding="utf-8") as f:
        text = f.read()
    top, functions, defines, structs = parse_header(text)
    FUNCTIONS.clear()
    FUNCTIONS.update(f[0] for f in functions)
    STRUCTS.clear()
    STRUCTS.update(structs)
    if not functions:
        sys.exit("gen-man.py: no afx_* prototypes found in %s" % HEADER)
    version = ".".join(
        next((v for n, v, _ in defines if n == "AFX_VERSION_" + part), "?") for part in ("MAJOR", "MINOR", "PATCH")
    )
    names = [f[0] for f in functions]
    pages = {}
    for name, ret, params, doc in functions:
        if not doc:
            sys.exit("gen-man.py: %s has no doc comment in %s" % (name, HEADER))
        pages[os.path.join("man3", name + ".3")] = function_page(name, ret, params, doc, names, version)
    pages[os.path.join("man7", "asyncfutex.7")] = overview_page(top, functions, defines, version)
    return pages


def existing():
    found = {}
    for section in sorted(os.listdir(MAN)) if os.path.isdir(MAN) else []:
        d = os.path.join(MAN, section)
        if not re.fullmatch(r"man[1-9]", section) or not os.path.isdir(d):
            continue
        for page in sorted(os.listdir(d)):
            with open(os.path.join(d, page), encoding="utf-8") as f:
                found[os.path.join(section, page)] = f.read()
    return found


def main(argv):
    check = argv[1:] == ["--check"]
    if argv[1:] and not check:
        sys.exit(__doc__)
    pages = generate()
    have = existing()
    if check:
        bad = []
        for path in sorted(set(pages) | set(have)):
            if path not in have:
                bad.append("missing: man/%s" % path)
            elif path not in pages:
                bad.append("stale (no such function in the header): man/%s" % path)
            elif have[path] != pages[path]:
                diff = difflib.unified_diff(
                    have[path].splitlines(), pages[path].splitlines(), "man/" + path, "generated", lineterm="", n=1
                )
                bad.append("out of date: man/%s\n%s" % (path, "\n".join(list(diff)[:40])))
        if bad:
            print("\n".join(bad), file=sys.stderr)
            print("gen-man.py: the pages in man/ are not current; run packaging/gen-man.py", file=sys.stderr)
            return 1
        print("gen-man.py: %d pages in man/ are current" % len(pages))
        return 0
    for path in sorted(set(have) - set(pages)):
        os.remove(os.path.join(MAN, path))
        print("removed man/%s" % path)
    for path, text in sorted(pages.items()):
        if have.get(path) != text:
            os.makedirs(os.path.dirname(os.path.join(MAN, path)), exist_ok=True)
            with open(os.path.join(MAN, path), "w", encoding="utf-8") as f:
                f.write(text)
            print("wrote man/%s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Source handling for the CUDA emulator: kernel discovery and the rewrites g++ needs.

Rewrites (each fails loudly, by raising EmuError, on a form it does not understand):
  * ``extern __shared__ T name[];`` (dynamic shared memory) becomes a pointer to the per-launch
    buffer: ``T* name = reinterpret_cast<T*>(__emu_dynamic_smem());``.
  * a block-scope ``__shared__ T name[...];`` keeps its declaration (cuda_emu.h maps ``__shared__``
    to ``thread_local``) and gains ``__emu_poison_static_smem((void*)&name, sizeof(name));`` on the
    same line, so its first use in every block sees NaN bytes. File-scope ``__shared__`` variables
    are not poisoned.
  * ``__noinline__`` becomes ``__attribute__((noinline))`` (cuda_emu.h cannot define it as a
    macro: system headers use the GCC spelling ``__attribute__((__noinline__))``).
  * a kernel definition with ``__launch_bounds__(MAX_THREADS, ...)`` gets a check of the block
    size at the top of its body (a GPU refuses such a launch; the emulator fails it).
Every rewrite keeps line numbers, so compiler errors point at the user's file.
"""
import re

from ._errors import EmuError

_IDENT = r"[A-Za-z_]\w*"


def mask_source(text):
    """Return text of equal length with comments blanked and string/char literal bodies blanked.

    Newlines are kept, so offsets and line numbers in the masked text match the original.
    """
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = " "
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                if text[k] != "\n":
                    out[k] = " "
            i = j
        elif c in "\"'":
            # raw strings (R"(...)") do not appear in CUDA kernels; treat them as plain strings
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            for k in range(i + 1, min(j, n)):
                out[k] = " "
            i = j + 1
        else:
            i += 1
    return "".join(out)


def mask_directives(masked):
    """Blank preprocessor directive lines (with their backslash continuations), keeping newlines."""
    out = masked.split("\n")
    cont = False
    for i, ln in enumerate(out):
        if cont or ln.lstrip().startswith("#"):
            cont = ln.rstrip().endswith("\\")
            out[i] = " " * len(ln)
    return "\n".join(out)


def line_of(text, pos):
    return text.count("\n", 0, pos) + 1


def _scopes(masked):
    """Map every '{' offset to its scope kind and yield (open, close, kind, name) intervals.

    kind: 'namespace' (name may be '' for an anonymous namespace), 'linkage' (extern "C" {),
    or 'other' (function bodies, classes, initializers).
    """
    stack, spans = [], []
    last_boundary = 0
    for m in re.finditer(r"[{};]", masked):
        ch, pos = m.group(), m.start()
        if ch == "{":
            head = masked[last_boundary:pos]
            head = "\n".join(ln for ln in head.split("\n") if not ln.lstrip().startswith("#"))
            ns = re.search(r"\bnamespace\s*(" + _IDENT + r")?\s*$", head)
            if ns:
                stack.append((pos, "namespace", ns.group(1) or ""))
            elif re.search(r'\bextern\s*"[^"]*"\s*$', head):
                stack.append((pos, "linkage", ""))
            else:
                stack.append((pos, "other", ""))
        elif ch == "}":
            if stack:
                start, kind, name = stack.pop()
                spans.append((start, pos, kind, name))
        last_boundary = pos + 1
    for start, kind, name in stack:  # unbalanced: treat as extending to the end
        spans.append((start, len(masked), kind, name))
    return spans


def _enclosing(spans, pos):
    """Scopes that contain pos, outermost first."""
    inside = [s for s in spans if s[0] < pos < s[1]]
    inside.sort(key=lambda s: s[0])
    return inside


def find_kernels(text, masked=None):
    """Names of non-template __global__ functions, qualified with their named namespaces.

    Template kernels are skipped: they need name expressions (``k<float>``), as with CuPy.
    """
    masked = mask_directives(mask_source(text) if masked is None else masked)
    spans = _scopes(masked)
    names = []
    decl = re.compile(
        r"__global__\s+(?:(?:__launch_bounds__\s*\([^()]*\)|static|inline|__noinline__|"
        r'__forceinline__|extern\s*"C")\s+)*void\s+(?:__launch_bounds__\s*\([^()]*\)\s*)?'
        r"(" + _IDENT + r")\s*\("
    )
    for m in re.finditer(r"\b__global__\b", masked):
        scopes = _enclosing(spans, m.start())
        if any(kind == "other" for _, _, kind, _ in scopes):
            continue
        head_start = max(masked.rfind(";", 0, m.start()), masked.rfind("}", 0, m.start()),
                         masked.rfind("{", 0, m.start())) + 1
        head = masked[head_start:m.start()]
        if re.search(r"\btemplate\b", head):
            continue
        d = decl.match(masked, m.start())
        if not d:
            continue  # e.g. a kernel produced by a macro: reachable through name_expressions
        qual = "::".join(name for _, _, kind, name in scopes if kind == "namespace" and name)
        name = (qual + "::" if qual else "") + d.group(1)
        if name not in names:
            names.append(name)
    return names


def _split_top_level(s, sep=","):
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch in "<([":
            depth += 1
        elif ch in ">)]":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _matching_paren(s, i):
    """Index of the ')' matching the '(' at i, or -1."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "(":
            depth += 1
        elif s[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    return -1


def rewrite_source(text, filename="<code>"):
    """Apply the rewrites described in the module docstring (shared memory, __noinline__,
    __launch_bounds__)."""
    masked = mask_source(text)
    code_only = mask_directives(masked)
    spans = _scopes(code_only)
    edits = []  # (start, end, replacement)

    def where(pos):
        return f"{filename}:{line_of(text, pos)}"

    def in_function(pos):
        return any(kind == "other" for _, _, kind, _ in _enclosing(spans, pos))

    dyn = re.compile(
        r"extern\s+__shared__\s+((?:__align__\s*\(\s*\d+\s*\)\s*)?)"
        r"((?:(?:const|volatile|unsigned|signed|long|short|struct)\s+)*"
        r"(?:" + _IDENT + r"::)*" + _IDENT + r"(?:\s*\*)*)\s*"
        r"((?:__align__\s*\(\s*\d+\s*\)\s*)?)"
        r"(" + _IDENT + r")\s*\[\s*\]\s*;"
    )
    for m in re.finditer(r"\bextern\s+__shared__\b", masked):
        if code_only[m.start()] == " ":
            raise EmuError(f"{where(m.start())}: 'extern __shared__' inside a preprocessor directive (macro) "
                           f"is not supported by the emulator; declare it in the kernel body")
        d = dyn.match(masked, m.start())
        if not d:
            snippet = text[m.start():text.find("\n", m.start())].strip()
            raise EmuError(f"{where(m.start())}: cannot emulate this dynamic shared memory declaration "
                           f"(expected 'extern __shared__ T name[];'): {snippet}")
        if not in_function(m.start()):
            raise EmuError(f"{where(m.start())}: file-scope 'extern __shared__' is not supported by the "
                           f"emulator; declare it inside the kernel")
        ctype, name = d.group(2).strip(), d.group(4)
        if ctype in ("const", "volatile") or ctype.split()[-1] in ("const", "volatile"):
            raise EmuError(f"{where(m.start())}: cannot parse the type of dynamic shared array '{name}'")
        nl = "\n" * masked.count("\n", d.start(), d.end())
        edits.append((d.start(), d.end(),
                      f"{ctype}* {name} = reinterpret_cast<{ctype}*>(__emu_dynamic_smem());{nl}"))

    for m in re.finditer(r"\b__shared__\b", masked):
        if re.search(r"\bextern\s+$", masked[max(0, m.start() - 40):m.start()]):
            continue
        if code_only[m.start()] == " " or not in_function(m.start()):
            continue  # file scope or inside a macro: plain thread_local, not poisoned
        end = masked.find(";", m.end())
        if end < 0:
            raise EmuError(f"{where(m.start())}: unterminated __shared__ declaration")
        body = re.sub(r"(?:__align__|alignas)\s*\([^()]*\)", " ", masked[m.end():end])
        if "=" in body or "{" in body:
            raise EmuError(f"{where(m.start())}: cannot emulate this __shared__ declaration "
                           f"(initializers are not allowed in CUDA): {text[m.start():end + 1].strip()}")
        names = []
        for k, part in enumerate(_split_top_level(body)):
            p = re.fullmatch(r"\s*(.*?)\b(" + _IDENT + r")\s*((?:\[[^\[\]]*\]\s*)*)", part, re.S)
            if not p or (k == 0 and not p.group(1).strip()) or (k > 0 and p.group(1).strip("* \n")):
                raise EmuError(f"{where(m.start())}: cannot parse this __shared__ declaration: "
                               f"{text[m.start():end + 1].strip()}")
            names.append(p.group(2))
        poison = " ".join(f"__emu_poison_static_smem((void*)&{nm}, sizeof({nm}));" for nm in names)
        edits.append((end + 1, end + 1, " " + poison))

    # __launch_bounds__(MAX_THREADS[, ...]) on a kernel definition: check the block size at entry
    # (a GPU refuses such a launch). The expression may use template parameters: it is evaluated
    # inside the function body.
    for m in re.finditer(r"\b__launch_bounds__\s*\(", code_only):
        if in_function(m.start()):
            continue  # not a kernel declaration
        close = _matching_paren(code_only, m.end() - 1)
        p_open = code_only.find("(", close + 1) if close > 0 else -1
        p_close = _matching_paren(code_only, p_open) if p_open > 0 else -1
        after = code_only[p_close + 1:].lstrip() if p_close > 0 else ""
        if after.startswith(";"):
            continue  # a declaration; the definition carries the bounds too
        if not after.startswith("{"):
            raise EmuError(f"{where(m.start())}: cannot find the kernel body after __launch_bounds__")
        bound = _split_top_level(code_only[m.end():close])[0].strip()
        brace = code_only.index("{", p_close)
        edits.append((brace + 1, brace + 1,
                       f" __emu_launch_bounds_((long long)({bound}), __LINE__);"))

    for m in re.finditer(r"\b__noinline__\b", masked):
        edits.append((m.start(), m.end(), "__attribute__((noinline))"))

    out, last = [], 0
    for start, end, rep in sorted(edits):
        out.append(text[last:start])
        out.append(rep)
        last = end
    out.append(text[last:])
    return "".join(out)

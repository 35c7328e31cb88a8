#!/usr/bin/env python3
# Kernel emulation: turns one kernels/<op>.cu into C++ that g++ compiles against the shim headers of
# tests/kernel_emulation/cuda/ (see cuda_runtime.h there for how the emulation works).
#
#   transform.py IN.cu OUT.cpp
#
# Only what no header can express is rewritten; line numbers are kept (a #line directive names IN.cu, so compiler
# errors and debuggers point at the kernel source):
#   k<<<grid, block[, smem[, stream]]>>>(args)   ->  ::emu::launch(k, grid, block[, smem[, stream]])(args)
#   extern __shared__ T name[];                  ->  T * const name = ::emu::dyn_smem<T>();
#   asm volatile("ptx" : : "r"(a), "l"(b) : ...) ->  ::emu::ptx("ptx", {::emu::ptx_operand(a), ...})
# An asm with output operands, or a construct the rewriting does not recognise, stops with an error naming the
# line. Python 3 standard library only.
import re
import sys


def fail(path, text, pos, msg):
    line = text.count('\n', 0, pos) + 1
    sys.exit('%s:%d: kernel emulation transform: %s' % (path, line, msg))


def skip_string(s, i):
    """s[i] is a quote; returns the index after the closing quote."""
    q = s[i]
    i += 1
    while s[i] != q:
        i += 2 if s[i] == '\\' else 1
    return i + 1


def match_paren(s, i):
    """s[i] == '('; returns the index of the matching ')' (strings and char literals skipped)."""
    depth = 0
    while i < len(s):
        c = s[i]
        if c in '"\'':
            i = skip_string(s, i)
            continue
        if c == '(':
            depth += 1
        elif c == ')':
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError('unbalanced parentheses')


def split_top(s, sep):
    """splits s at the characters `sep` outside strings and brackets."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c in '"\'':
            i = skip_string(s, i)
            continue
        if c in '([{':
            depth += 1
        elif c in ')]}':
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(s[start:i])
            start = i + 1
        i += 1
    parts.append(s[start:])
    return parts


def rewrite_launches(path, s):
    out, pos = [], 0
    while True:
        i = s.find('<<<', pos)
        if i < 0:
            break
        j = s.find('>>>', i)
        if j < 0:
            fail(path, s, i, 'a <<< without >>>')
        # the callee: an identifier (with ::), optionally followed by <template arguments>, before <<<
        k = i
        while k > pos and s[k - 1].isspace():
            k -= 1
        if s[k - 1] == '>':
            depth, k = 0, k - 1
            while k >= pos:
                if s[k] == '>':
                    depth += 1
                elif s[k] == '<':
                    depth -= 1
                    if depth == 0:
                        break
                k -= 1
            while k > pos and s[k - 1].isspace():
                k -= 1
        while k > pos and (s[k - 1].isalnum() or s[k - 1] in '_:'):
            k -= 1
        callee = s[k:i]
        if not re.match(r'\s*[A-Za-z_:]', callee):
            fail(path, s, i, 'cannot find the kernel of this launch')
        out.append(s[pos:k])
        out.append('::emu::launch(%s, %s)' % (callee, s[i + 3:j]))
        pos = j + 3
    out.append(s[pos:])
    return ''.join(out)


def rewrite_extern_shared(s):
    return re.sub(r'extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?([A-Za-z_][\w:]*)\s+(\w+)\s*\[\s*\]\s*;',
                  r'\1 * const \2 = ::emu::dyn_smem<\1>();', s)


def rewrite_asm(path, s):
    out, pos = [], 0
    for m in re.finditer(r'\b(?:asm|__asm__)\s*(?:volatile|__volatile__)?\s*\(', s):
        if m.start() < pos:
            continue
        open_ = m.end() - 1
        try:
            close = match_paren(s, open_)
        except (ValueError, IndexError):
            fail(path, s, m.start(), 'unbalanced asm statement')
        body = s[open_ + 1:close]
        sections = split_top(body, ':')
        template = sections[0].strip()
        if len(sections) > 1 and sections[1].strip():
            fail(path, s, m.start(), 'asm with output operands is not emulated')
        operands = []
        if len(sections) > 2 and sections[2].strip():
            for op in split_top(sections[2], ','):
                om = re.match(r'\s*"[^"]*"\s*\((.*)\)\s*$', op, re.S)
                if not om:
                    fail(path, s, m.start(), 'asm operand not understood: %s' % op.strip())
                operands.append('::emu::ptx_operand(%s)' % om.group(1).strip())
        repl = '::emu::ptx(%s, {%s})' % (template, ', '.join(operands))
        repl += '\n' * (s.count('\n', m.start(), close + 1) - repl.count('\n'))   # keep the line numbers
        out.append(s[pos:m.start()])
        out.append(repl)
        pos = close + 1
    out.append(s[pos:])
    return ''.join(out)


def main():
    if len(sys.argv) != 3:
        sys.exit('usage: transform.py IN.cu OUT.cpp')
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        s = f.read()
    s = rewrite_extern_shared(s)
    s = rewrite_asm(src, s)
    s = rewrite_launches(src, s)
    if re.search(r'\bextern\s+__shared__', s):
        sys.exit('%s: kernel emulation transform: an extern __shared__ declaration was not rewritten' % src)
    header = ('// Generated by tests/kernel_emulation/transform.py from %s; do not edit.\n'
              '#include <cuda_runtime.h>\n#line 1 "%s"\n' % (src, src))
    with open(dst + '.tmp', 'w') as f:
        f.write(header + s)
    import os
    os.replace(dst + '.tmp', dst)


if __name__ == '__main__':
    main()

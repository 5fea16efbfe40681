// preprocess.json's `text.clean` steps (docs/export.md), as Python runs them.

import { decodeHTML } from 'entities';

// Python's html.unescape: the references it matches, each decoded on its own.
const CHARREF = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/g;

/**
 * Numeric references Python's html.unescape deletes (html._invalid_codepoints less the
 * ones it maps); the `entities` package keeps them, and agrees with Python on the rest
 * (HTML5 named references with and without `;`, windows-1252 numbers, U+FFFD for the
 * invalid ones).
 */
function pythonDropsCodePoint(n) {
  return (
    (n >= 0x1 && n <= 0x8) ||
    n === 0xb ||
    (n >= 0xe && n <= 0x1f) ||
    n === 0x7f ||
    (n >= 0xfdd0 && n <= 0xfdef) ||
    (n <= 0x10ffff && (n & 0xfffe) === 0xfffe)
  );
}

/** Python's html.unescape. */
export function htmlUnescape(text) {
  if (!text.includes('&')) return text;
  return text.replace(CHARREF, (match, body) => {
    if (body[0] === '#') {
      const hex = body[1] === 'x' || body[1] === 'X';
      const digits = body.slice(hex ? 2 : 1).replace(/;$/, '');
      const n = Number.parseInt(digits, hex ? 16 : 10);
      if (pythonDropsCodePoint(n)) return '';
    }
    return decodeHTML(match);
  });
}

function stripChars(text, chars) {
  const set = new Set(chars);
  const points = [...text];
  let start = 0;
  let end = points.length;
  while (start < end && set.has(points[start])) start++;
  while (end > start && set.has(points[end - 1])) end--;
  return points.slice(start, end).join('');
}

/**
 * A function that runs `steps` on a text.
 * @param {object[]} steps  preprocess.json `text.clean`
 * @param {object} [options]
 * @param {(text: string) => string} [options.fixText]  stands in for Python's
 *   ftfy.fix_text, which has no JavaScript port; without it, that step passes texts
 *   through unchanged (only texts ftfy would repair can then tokenize differently).
 * @returns {(text: string) => string}
 */
export function textCleaner(steps, { fixText } = {}) {
  const runs = steps.map((step) => {
    switch (step.op) {
      case 'ftfy_fix_text':
        return fixText ?? ((text) => text);
      case 'html_unescape':
        return htmlUnescape;
      case 'replace_regex': {
        // The patterns are character classes with \uXXXX escapes: the `u` flag reads
        // them as Python does, by code point.
        const pattern = new RegExp(step.pattern, 'gu');
        return (text) => text.replace(pattern, () => step.replacement);
      }
      case 'replace':
        return (text) => text.replaceAll(step.find, step.replacement);
      case 'strip':
        return (text) => stripChars(text, step.chars);
      case 'lowercase':
        return (text) => text.toLowerCase();
      default:
        throw new Error(`preprocess.json text.clean: unknown step ${JSON.stringify(step.op)}`);
    }
  });
  return (text) => runs.reduce((value, run) => run(value), text);
}

/* Accessibility repairs on every page of the book, the first two found by axe-core (tests/test_browser.py
 * runs it on every page at a desktop and a phone width):
 *
 *   - A display formula wider than the text column scrolls sideways, but the book takes MathJax's
 *     formulas out of the tab order (over a hundred per chapter, see _config.yml), so a keyboard reader
 *     could not scroll one. A notebook output box, and a wide table in one (arlm.css), scroll the same way. The
 *     theme makes scrolling code blocks and tables tab stops, but neither of these. Each one that
 *     overflows now, and again after a resize, and holds nothing focusable, becomes a named tab stop;
 *     the others stay out of the tab order.
 *   - The theme's primary sidebar (the book's title, the search button and the chapter list) is a plain
 *     <div>, so the title and the search button sat outside every landmark: a screen reader's landmark
 *     list skipped them. The sidebar is named as a complementary landmark; the chapter list inside it
 *     stays the "Main" navigation landmark.
 *   - The book gives a Chinese term once, next to the English one ("mixed precision (混合精度)"), and quotes
 *     its Chinese source. The page is lang="en", so a screen reader read the Chinese in an English voice
 *     (letter names, or nothing). Each run of Han characters, CJK punctuation and fullwidth forms in the
 *     page's text (the article, its contents list, the book's navigation) is wrapped in <span lang="zh">.
 *     Code, formulas, figures and form controls are left as they are, and so is anything inside an
 *     element that already says its language; a second pass finds nothing left to wrap.
 */
(function () {
  "use strict";

  const sidebar = document.getElementById("pst-primary-sidebar");
  if (sidebar && !sidebar.hasAttribute("role")) {
    sidebar.setAttribute("role", "complementary");
    sidebar.setAttribute("aria-label", "Book navigation");
  }

  // Han (ideographs, radicals, 々 〇), CJK symbols and punctuation (、。「」《》), fullwidth forms (，：（）);
  // a run may hold spaces between them, so that a phrase is read as one.
  const CJK_CHARS = "\\p{Script=Han}\\u3000-\\u303F\\uFF00-\\uFFEF";
  const CJK_RUN = new RegExp("[" + CJK_CHARS + "]+(?:\\s+[" + CJK_CHARS + "]+)*", "gu");
  const HAS_CJK = new RegExp("[" + CJK_CHARS + "]", "u");
  // Text a reader does not hear as prose, or that other code reads back: code, MathJax's input and output,
  // plotly's SVG, the figures' JSON, form controls (an <option> holds text only).
  const NOT_PROSE = [
    "script", "style", "noscript", "template", "textarea", "select", "option", "input",
    "code", "pre", "kbd", "samp", "svg", "math", "mjx-container", ".math", ".MathJax",
    ".plotly-graph-div", ".js-plotly-plot", "[contenteditable]",
  ].join(", ");

  function textToMark(root) {
    const found = [];
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT, {
      acceptNode(node) {
        if (node.nodeType === Node.TEXT_NODE) {
          return HAS_CJK.test(node.data) ? NodeFilter.FILTER_ACCEPT : NodeFilter.FILTER_SKIP;
        }
        // An element that says its language (one of ours, from an earlier pass, too), or holds no prose:
        // nothing under it is looked at.
        return node.hasAttribute("lang") || node.matches(NOT_PROSE)
          ? NodeFilter.FILTER_REJECT
          : NodeFilter.FILTER_SKIP;
      },
    });
    while (walker.nextNode()) found.push(walker.currentNode);
    return found;
  }

  function markChineseText() {
    const roots = Array.from(document.querySelectorAll(".bd-main, #pst-primary-sidebar"))
      .filter((root) => {
        const said = root.closest("[lang]");
        return !said || said === document.documentElement;
      });
    for (const root of roots) {
      for (const text of textToMark(root)) {
        const parts = document.createDocumentFragment();
        let last = 0;
        for (const match of text.data.matchAll(CJK_RUN)) {
          if (match.index > last) parts.append(text.data.slice(last, match.index));
          const span = document.createElement("span");
          span.lang = "zh";
          span.textContent = match[0];
          parts.append(span);
          last = match.index + match[0].length;
        }
        if (last < text.data.length) parts.append(text.data.slice(last));
        text.replaceWith(parts);
      }
    }
  }

  const FOCUSABLE = 'a[href], button, input, select, textarea, [tabindex]:not([tabindex="-1"])';
  const SCROLLS = ["auto", "scroll"];

  function scrollCandidates() {
    const formulas = Array.from(document.querySelectorAll('mjx-container[display="true"]'));
    const outputs = Array.from(
      document.querySelectorAll(".cell_output .output, .cell_output .output div, .cell_output .output table"),
    )
      // A figure's box is left to arlm-figures.js: the figure itself takes the focus once it is drawn.
      .filter((box) => !box.closest("mjx-container") && !box.querySelector(".plotly-graph-div"))
      .filter((box) => SCROLLS.includes(getComputedStyle(box).overflowX));
    return formulas
      .map((el) => [el, "Formula"])
      .concat(outputs.map((el) => [el, el.tagName === "TABLE" ? "Table" : "Output"]));
  }

  function markScrollableRegions() {
    for (const [box, kind] of scrollCandidates()) {
      const marked = box.dataset.arlmScrolls === "yes";
      const needsStop = box.scrollWidth > box.clientWidth + 1 && (marked || !box.querySelector(FOCUSABLE));
      if (needsStop && !marked) {
        box.dataset.arlmScrolls = "yes";
        box.setAttribute("tabindex", "0");
        // A table keeps its own role (a screen reader's table navigation); the label names it.
        if (box.tagName !== "TABLE") box.setAttribute("role", "group");
        box.setAttribute("aria-label", kind + " wider than the page: scroll it with the arrow keys");
      } else if (!needsStop && marked) {
        delete box.dataset.arlmScrolls;
        box.removeAttribute("tabindex");
        box.removeAttribute("role");
        box.removeAttribute("aria-label");
      }
    }
  }

  function whenTypeset() {
    // MathJax (loaded by the page with its own config) typesets after DOMContentLoaded.
    const startup = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
    if (startup) {
      startup.then(markScrollableRegions);
    } else if (document.querySelector(".math")) {
      setTimeout(whenTypeset, 200);
    } else {
      markScrollableRegions();
    }
  }

  let pendingResize = null;
  window.addEventListener("resize", function () {
    clearTimeout(pendingResize);
    pendingResize = setTimeout(markScrollableRegions, 150);
  });
  function whenParsed() {
    markChineseText();
    whenTypeset();
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", whenParsed);
  } else {
    whenParsed();
  }
})();

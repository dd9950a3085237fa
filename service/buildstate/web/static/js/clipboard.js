// Copying a string for the person: the Clipboard API where the page may use it, else the old way (select
// the text and ask the browser to copy it), else the text is left selected for Ctrl+C.

function selectText(node) {
  const range = document.createRange();
  range.selectNodeContents(node);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

/** Copy `text`; `node` holds the same text, to select when the Clipboard API is missing or refused.
 * Resolves to "copied" or "selected" (the text is selected and the person copies it). */
export async function copyText(text, node) {
  if (navigator.clipboard?.writeText) {
    try {
      await navigator.clipboard.writeText(text);
      return "copied";
    } catch {
      // refused (no permission, not focused): fall through
    }
  }
  selectText(node);
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch {
    copied = false;
  }
  return copied ? "copied" : "selected";
}

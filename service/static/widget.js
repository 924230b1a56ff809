/*
 * notesrag chat widget: a web component that asks a notesrag service and streams cited answers.
 *
 *   <script src="https://notes.example/widget.js" defer></script>
 *   <notesrag-chat endpoint="https://notes.example" api-key="..." title="Ask the notes"
 *                  source-url-template="https://docs.example/{path}#{anchor}"></notesrag-chat>
 *
 * Attributes (all optional):
 *   endpoint             the service's base URL [default: the origin this script was loaded from]
 *   api-key              sent as `Authorization: Bearer <key>` (use a key with the query scope only)
 *   title                the panel's heading [default: "Ask the notes"]
 *   placeholder          the question box's placeholder
 *   source-url-template  links citations to the portal when the service sends no `url` of its own
 *                        (a citation's `url` comes from NOTESRAG_SOURCE_URL_TEMPLATE, or is a web
 *                        page's URL, and wins); placeholders {path} (the source with source-root
 *                        removed), {path_noext} (without its extension), {source} (as the service
 *                        sent it), {name} (file name), {anchor} (the service's heading slug, else
 *                        the slug of the last heading), {heading}, {line} and {line_start},
 *                        {line_end}, {page} (a PDF's), {start}, {end}.
 *                        A placeholder the service did not send drops the template's #fragment
 *                        (or the whole link when it is outside the fragment).
 *   source-root          the prefix that {path} removes from sources
 *   top-k                passages to retrieve
 *   open                 present: the panel is open
 *
 * Theming: CSS custom properties on the element or any ancestor, e.g.
 *   notesrag-chat { --notesrag-accent: #0b7a5c; --notesrag-font: "Inter", sans-serif; }
 * (--notesrag-accent, --notesrag-accent-text, --notesrag-bg, --notesrag-fg, --notesrag-muted,
 *  --notesrag-border, --notesrag-user-bg, --notesrag-user-fg, --notesrag-bot-bg, --notesrag-error,
 *  --notesrag-error-bg, --notesrag-warn, --notesrag-warn-bg, --notesrag-font, --notesrag-font-size,
 *  --notesrag-radius, --notesrag-z, --notesrag-panel-width, --notesrag-panel-height, --notesrag-offset)
 *
 * Each answer's message is a `.msg.bot` whose data-state a portal may style: waiting, streaming,
 * answered, low-confidence (answered, but the service's confidence is under its
 * NOTESRAG_LOW_CONFIDENCE: a note asks the reader to check the sources), unanswerable, error,
 * cancelled.
 *
 * The first question goes to POST /v1/ask (Server-Sent Events: contexts, citations, delta, done);
 * follow-ups go to POST /v1/chat/completions with the earlier turns, because /v1/ask takes none.
 * Plain JavaScript, no build step: fetch + ReadableStream (not EventSource) so it can POST and
 * send the Authorization header; AbortController for the stop button.
 */
(() => {
  "use strict";

  const TAG = "notesrag-chat";
  if (customElements.get(TAG)) return;

  // the origin of this script: the default endpoint, so `<script src=".../widget.js">` is enough
  const SCRIPT_ORIGIN = (() => {
    try {
      return new URL(document.currentScript.src, location.href).origin;
    } catch (_) {
      return location.origin;
    }
  })();

  const MAX_HISTORY_MESSAGES = 16; // the service keeps the last 8 turns anyway

  // Every size is in px, never em or rem: rem follows the host page's root font size.
  // `.root` sets every inherited property explicitly (all: initial), so nothing the page
  // sets on <notesrag-chat> or its ancestors (colour, font, line height...) inherits in.
  const STYLE = `
:host {
  all: initial;
  --_accent: var(--notesrag-accent, #2f5bd3);
  --_accent-text: var(--notesrag-accent-text, #ffffff);
  --_bg: var(--notesrag-bg, #ffffff);
  --_fg: var(--notesrag-fg, #1f2328);
  --_muted: var(--notesrag-muted, #59636e);
  --_border: var(--notesrag-border, #d0d7de);
  --_user-bg: var(--notesrag-user-bg, var(--_accent));
  --_user-fg: var(--notesrag-user-fg, var(--_accent-text));
  --_bot-bg: var(--notesrag-bot-bg, #f3f5f8);
  --_error: var(--notesrag-error, #b42318);
  --_error-bg: var(--notesrag-error-bg, #fef3f2);
  --_warn: var(--notesrag-warn, #7a4d00);
  --_warn-bg: var(--notesrag-warn-bg, #fff6d6);
  --_font: var(--notesrag-font, system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif);
  --_size: var(--notesrag-font-size, 14px);
  --_radius: var(--notesrag-radius, 12px);
  --_z: var(--notesrag-z, 2147483000);
  --_offset: var(--notesrag-offset, 20px);
  --_panel-w: var(--notesrag-panel-width, 400px);
  --_panel-h: var(--notesrag-panel-height, 600px);
}
/* all: initial drops the UA's [hidden] rule; a portal may still hide the widget that way */
:host([hidden]) { display: none !important; }
.root {
  all: initial;
  display: block;
  font-family: var(--_font);
  font-size: var(--_size);
  line-height: 1.45;
  color: var(--_fg);
  text-align: left;
  -webkit-text-size-adjust: 100%;
  text-size-adjust: 100%;
}
*, *::before, *::after { box-sizing: border-box; }
[hidden] { display: none !important; }
button, textarea { font: inherit; color: inherit; letter-spacing: inherit; }
button { cursor: pointer; }
:focus-visible { outline: 2px solid var(--_accent); outline-offset: 2px; }
.sr-only {
  position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px;
  overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0;
}

.launcher {
  position: fixed; right: var(--_offset); bottom: var(--_offset); z-index: var(--_z);
  display: inline-flex; align-items: center; gap: 8px;
  height: 48px; padding: 0 18px 0 14px; margin: 0;
  border: 0; border-radius: 24px;
  background: var(--_accent); color: var(--_accent-text);
  font-weight: 600; font-size: 15px;
  box-shadow: 0 6px 20px rgba(15, 23, 42, 0.22), 0 1px 3px rgba(15, 23, 42, 0.16);
}
.launcher:hover { filter: brightness(1.06); }
.launcher svg { width: 22px; height: 22px; flex: none; }
.launcher[aria-expanded="true"] .launcher-open { display: none; }
.launcher[aria-expanded="false"] .launcher-close { display: none; }
/* open: a round close button, its name "Close the chat" (no visible label that would differ) */
.launcher[aria-expanded="true"] { width: 48px; padding: 0; justify-content: center; }
.launcher[aria-expanded="true"] .launcher-label { display: none; }

.panel {
  position: fixed; z-index: var(--_z);
  right: var(--_offset); bottom: calc(var(--_offset) + 60px);
  width: min(var(--_panel-w), calc(100vw - 2 * var(--_offset)));
  height: min(var(--_panel-h), calc(100vh - var(--_offset) * 2 - 60px));
  display: flex; flex-direction: column;
  background: var(--_bg); color: var(--_fg);
  border: 1px solid var(--_border); border-radius: var(--_radius);
  box-shadow: 0 16px 48px rgba(15, 23, 42, 0.25);
  overflow: hidden;
}
.head {
  display: flex; align-items: center; gap: 6px;
  padding: 10px 8px 10px 16px;
  background: var(--_accent); color: var(--_accent-text);
}
.head h2 {
  flex: 1; margin: 0; min-width: 0;
  font-size: 15px; font-weight: 600; line-height: 1.3;
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
}
.icon-btn {
  display: inline-flex; align-items: center; justify-content: center;
  min-width: 32px; height: 32px; padding: 0 8px; margin: 0;
  border: 0; border-radius: 8px; background: transparent; color: inherit;
  font-size: 13px; font-weight: 500;
}
.icon-btn:hover { background: rgba(255, 255, 255, 0.18); }
.icon-btn svg { width: 18px; height: 18px; }
.head :focus-visible { outline-color: var(--_accent-text); }

.log {
  flex: 1; min-height: 0; overflow-y: auto; overscroll-behavior: contain;
  padding: 14px 14px 6px;
  display: flex; flex-direction: column; gap: 12px;
}
.intro { margin: auto 0; padding: 8px 6px; color: var(--_muted); text-align: center; }
.intro strong { display: block; color: var(--_fg); font-size: 15px; margin-bottom: 4px; }

.msg { display: flex; flex-direction: column; max-width: 100%; }
.msg.user { align-items: flex-end; }
.msg.bot { align-items: flex-start; }
.bubble {
  max-width: 88%; padding: 9px 12px; border-radius: 14px;
  overflow-wrap: anywhere; white-space: pre-wrap;
}
.user .bubble { background: var(--_user-bg); color: var(--_user-fg); border-bottom-right-radius: 4px; }
.bot .bubble {
  max-width: 100%; width: 100%; background: var(--_bot-bg); color: var(--_fg);
  border-bottom-left-radius: 4px; white-space: normal;
}
.answer { margin: 0; white-space: pre-wrap; }
.answer:empty { display: none; }
.status { margin: 0; color: var(--_muted); font-size: 13px; display: flex; align-items: center; gap: 8px; }
.status:empty { display: none; }
.answer:not(:empty) + .status { margin-top: 6px; }
.dots { display: inline-flex; gap: 3px; }
.dots i { width: 5px; height: 5px; border-radius: 50%; background: currentColor; opacity: 0.35;
          animation: nr-blink 1s infinite ease-in-out; }
.dots i:nth-child(2) { animation-delay: 0.15s; }
.dots i:nth-child(3) { animation-delay: 0.3s; }
@keyframes nr-blink { 50% { opacity: 1; } }
@media (prefers-reduced-motion: reduce) { .dots i { animation: none; opacity: 0.7; } }

.ref {
  display: inline-block; min-width: 18px; height: 18px; margin: 0 1px; padding: 0 4px;
  border: 0; border-radius: 9px; vertical-align: 1px;
  background: var(--_accent); color: var(--_accent-text);
  font-size: 11px; font-weight: 700; line-height: 18px; text-align: center;
}

.bot[data-state="unanswerable"] .bubble {
  background: var(--_bg); border: 1px dashed var(--_border);
}
.notice-title {
  display: flex; align-items: center; gap: 6px; margin: 0 0 4px;
  font-weight: 600; color: var(--_fg);
}
.notice-title svg { width: 16px; height: 16px; flex: none; color: var(--_muted); }
.bot[data-state="unanswerable"] .answer { color: var(--_muted); }
.bot[data-state="error"] .bubble {
  background: var(--_error-bg); color: var(--_error); border: 1px solid currentColor;
}
.bot[data-state="error"] .notice-title, .bot[data-state="error"] .notice-title svg { color: var(--_error); }
.error-text { margin: 0; }
.error-detail { margin: 6px 0 0; font-size: 12px; opacity: 0.85; overflow-wrap: anywhere; }
.bot[data-state="cancelled"] .status { font-style: italic; }
/* answered under the service's low-confidence threshold: the answer and its sources as usual,
   under a note in the warning colours (text and icon, not colour alone) */
.bot[data-state="low-confidence"] .bubble { border: 1px solid color-mix(in srgb, var(--_warn) 45%, transparent); }
.confidence-note {
  display: flex; align-items: flex-start; gap: 6px; margin: 0 0 8px; padding: 6px 8px;
  border-radius: 8px; background: var(--_warn-bg); color: var(--_warn); font-size: 13px;
}
.confidence-note svg { width: 16px; height: 16px; flex: none; margin-top: 1px; }
.confidence-note strong { font-weight: 600; }

.sources { margin: 10px 0 0; padding: 0; list-style: none; display: flex; flex-direction: column; gap: 6px; }
.sources-label { margin: 10px 0 0; font-size: 12px; font-weight: 600; color: var(--_muted);
                 text-transform: uppercase; letter-spacing: 0.04em; }
.sources-label + .sources { margin-top: 4px; }
.sources li { margin: 0; padding: 0; }
details {
  background: var(--_bg); border: 1px solid var(--_border); border-radius: 8px;
}
details[open] { border-color: var(--_accent); }
summary {
  display: flex; align-items: baseline; gap: 8px; padding: 6px 10px;
  cursor: pointer; list-style: none; font-size: 13px;
}
summary::-webkit-details-marker { display: none; }
summary::after { content: "▸"; margin-left: auto; color: var(--_muted); flex: none; }
details[open] summary::after { content: "▾"; }
.num {
  flex: none; min-width: 20px; height: 20px; padding: 0 5px; border-radius: 10px;
  background: var(--_accent); color: var(--_accent-text);
  font-size: 11px; font-weight: 700; line-height: 20px; text-align: center;
}
.where { min-width: 0; display: flex; flex-direction: column; }
.heading { font-weight: 600; overflow-wrap: anywhere; }
.file { color: var(--_muted); font-size: 12px; overflow-wrap: anywhere; }
blockquote {
  margin: 0 10px 8px; padding: 4px 0 4px 10px;
  border-left: 3px solid var(--_accent); color: var(--_fg);
  font-size: 13px; white-space: pre-wrap; overflow-wrap: anywhere;
}
.open-source { display: inline-block; margin: 0 10px 8px; font-size: 13px; color: var(--_accent); }

/* feedback: thumbs under an answer; "down" asks for the right source */
.feedback { margin: 10px 0 0; font-size: 13px; }
.fb-row { display: flex; align-items: center; gap: 4px; color: var(--_muted); }
.fb-label { margin-right: 4px; }
.fb-btn {
  display: inline-flex; align-items: center; justify-content: center;
  width: 30px; height: 30px; margin: 0; padding: 0;
  border: 1px solid var(--_border); border-radius: 8px; background: var(--_bg); color: var(--_muted);
}
.fb-btn svg { width: 16px; height: 16px; }
.fb-btn:hover { color: var(--_fg); border-color: var(--_muted); }
.fb-btn[aria-pressed="true"] { background: var(--_accent); border-color: var(--_accent); color: var(--_accent-text); }
.fb-status { margin: 6px 0 0; color: var(--_muted); }
.fb-status:empty, .fb-found:empty { display: none; }
.fb-found { margin: 0; color: var(--_muted); }
.feedback[data-state="error"] .fb-status { color: var(--_error); }
.fb-pick {
  margin: 8px 0 0; padding: 8px 10px; display: flex; flex-direction: column; gap: 8px;
  background: var(--_bg); border: 1px solid var(--_border); border-radius: 8px;
}
.fb-pick fieldset { margin: 0; padding: 0; border: 0; min-width: 0; }
.fb-pick legend { padding: 0; margin: 0 0 4px; font-weight: 600; color: var(--_fg); }
.fb-options { display: flex; flex-direction: column; gap: 2px; }
.fb-option { display: flex; align-items: baseline; gap: 6px; padding: 2px 0; cursor: pointer; overflow-wrap: anywhere; }
.fb-option input { margin: 0; flex: none; accent-color: var(--_accent); }
.fb-option small { color: var(--_muted); }
.fb-search { display: flex; gap: 6px; }
.fb-pick input[type="search"], .fb-pick textarea {
  flex: 1; min-width: 0; margin: 0; padding: 5px 8px; font: inherit; font-size: 13px;
  border: 1px solid var(--_border); border-radius: 6px; background: var(--_bg); color: var(--_fg);
}
.fb-pick textarea { width: 100%; height: 52px; resize: vertical; }
.fb-pick label.fb-field { display: flex; flex-direction: column; gap: 3px; color: var(--_muted); }
.fb-actions { display: flex; gap: 6px; }
.fb-small {
  height: 30px; padding: 0 10px; margin: 0; border-radius: 6px; font-size: 13px; font-weight: 600;
  border: 1px solid var(--_border); background: var(--_bg); color: var(--_fg);
}
.fb-small.primary { border-color: var(--_accent); background: var(--_accent); color: var(--_accent-text); }

.composer {
  display: flex; align-items: flex-end; gap: 8px; margin: 0;
  padding: 10px 12px 4px; border-top: 1px solid var(--_border); background: var(--_bg);
}
textarea {
  flex: 1; min-width: 0; height: 40px; max-height: 132px; margin: 0; padding: 9px 12px;
  border: 1px solid var(--_border); border-radius: 10px;
  background: var(--_bg); color: var(--_fg);
  font-size: 14px; line-height: 20px; resize: none; overflow-y: auto;
}
textarea::placeholder { color: var(--_muted); opacity: 1; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
textarea:focus { outline: none; border-color: var(--_accent); box-shadow: 0 0 0 3px color-mix(in srgb, var(--_accent) 22%, transparent); }
.send, .stop {
  flex: none; display: inline-flex; align-items: center; justify-content: center; gap: 6px;
  height: 40px; min-width: 40px; padding: 0 12px; margin: 0;
  border-radius: 10px; font-weight: 600; font-size: 14px;
}
.send { border: 0; background: var(--_accent); color: var(--_accent-text); }
.send:disabled { opacity: 0.45; cursor: default; }
.send svg, .stop svg { width: 18px; height: 18px; }
.stop { border: 1px solid var(--_border); background: var(--_bg); color: var(--_fg); }
.hint { margin: 0; padding: 2px 14px 8px; font-size: 11px; color: var(--_muted); background: var(--_bg); }

/* phones: the panel takes the whole screen */
@media (max-width: 480px) {
  .panel {
    inset: 0; width: 100%; height: 100%; max-width: none; max-height: none;
    border: 0; border-radius: 0;
  }
  .launcher { right: 16px; bottom: 16px; }
  .bubble { max-width: 92%; }
}
@media (max-width: 480px) and (hover: none) {
  textarea { font-size: 16px; } /* below 16px, mobile Safari zooms into the field */
}
@media (hover: none) {
  .hint { display: none; } /* no Shift key on a touch keyboard */
}
`;

  const ICONS = {
    chat: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.6A8 8 0 1 1 21 12z"/></svg>',
    close: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2.2" stroke-linecap="round" aria-hidden="true"><path d="M6 6l12 12M18 6L6 18"/></svg>',
    send: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2.2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M5 12h13M13 6l6 6-6 6"/></svg>',
    stop: '<svg viewBox="0 0 24 24" fill="currentColor" aria-hidden="true"><rect x="7" y="7" width="10" height="10" rx="1.5"/></svg>',
    info: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" aria-hidden="true"><circle cx="12" cy="12" r="9"/><path d="M12 11v5M12 8h.01"/></svg>',
    up: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M7 11v9H4v-9h3zM7 11l4-8a2 2 0 0 1 2 2v4h5.5a2 2 0 0 1 2 2.3l-1.2 7A2 2 0 0 1 17.3 20H7"/></svg>',
    down: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M7 13V4H4v9h3zM7 13l4 8a2 2 0 0 0 2-2v-4h5.5a2 2 0 0 0 2-2.3l-1.2-7A2 2 0 0 0 17.3 4H7"/></svg>',
    warn: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M12 3l10 18H2L12 3z"/><path d="M12 10v4M12 17h.01"/></svg>',
  };

  const TEMPLATE = `
<div class="root" part="root" title="">
  <button type="button" class="launcher" part="launcher" aria-haspopup="dialog" aria-expanded="false">
    <span class="launcher-open">${ICONS.chat}</span><span class="launcher-close">${ICONS.close}</span>
    <span class="launcher-label"></span>
  </button>
  <section class="panel" part="panel" role="dialog" aria-modal="false" hidden>
    <header class="head">
      <h2 class="title"></h2>
      <button type="button" class="icon-btn new" aria-label="Start a new conversation" title="New conversation">New</button>
      <button type="button" class="icon-btn close" aria-label="Close" title="Close (Esc)">${ICONS.close}</button>
    </header>
    <div class="log" role="log" aria-live="polite" aria-relevant="additions text" tabindex="-1">
      <p class="intro"><strong>Ask a question about the notes.</strong>Answers quote the passages they come from.</p>
    </div>
    <form class="composer" novalidate>
      <label class="sr-only">Your question</label>
      <textarea class="question" rows="1" enterkeyhint="send" autocomplete="off"></textarea>
      <button type="submit" class="send" aria-label="Send question" title="Send (Enter)">${ICONS.send}</button>
      <button type="button" class="stop" aria-label="Stop the answer" hidden>${ICONS.stop}<span>Stop</span></button>
    </form>
    <p class="hint" aria-hidden="true">Enter sends · Shift+Enter adds a line</p>
  </section>
</div>`;

  let counter = 0;
  let sheet = null;

  /** One constructed stylesheet for every instance; unlike a <style> element, a page's
   *  Content-Security-Policy without 'unsafe-inline' styles does not block it. */
  function sharedSheet() {
    if (sheet === null) {
      try {
        sheet = new CSSStyleSheet();
        sheet.replaceSync(STYLE);
      } catch (_) {
        sheet = false; // an old browser: fall back to a <style> element
      }
    }
    return sheet || null;
  }

  // -- pure helpers ---------------------------------------------------------------------------

  /** Server-Sent Events of a fetch body: yields {event, data} as each event completes. */
  async function* readSSE(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        buf += done ? decoder.decode() : decoder.decode(value, { stream: true });
        // normalise line ends, keeping a trailing \r that may be the first half of \r\n
        const keep = !done && buf.endsWith("\r");
        buf = (keep ? buf.slice(0, -1) : buf).replace(/\r\n?/g, "\n") + (keep ? "\r" : "");
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const ev = parseBlock(block);
          if (ev) yield ev;
        }
        if (done) {
          const ev = buf.trim() ? parseBlock(buf) : null; // a last event without its blank line
          if (ev) yield ev;
          return;
        }
      }
    } finally {
      reader.releaseLock();
    }
  }

  function parseBlock(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    return data.length ? { event, data: data.join("\n") } : null;
  }

  /** Seconds to wait from a Retry-After header (seconds or an HTTP date); null if absent. */
  function retryAfterSeconds(value) {
    if (!value) return null;
    if (/^\s*\d+\s*$/.test(value)) return parseInt(value, 10);
    const when = Date.parse(value);
    return Number.isNaN(when) ? null : Math.max(0, Math.ceil((when - Date.now()) / 1000));
  }

  function formatWait(seconds) {
    if (seconds < 90) return `${seconds} second${seconds === 1 ? "" : "s"}`;
    const minutes = Math.ceil(seconds / 60);
    return `${minutes} minute${minutes === 1 ? "" : "s"}`;
  }

  /** A readable sentence for a failed HTTP response. */
  function httpErrorMessage(status, retryAfter) {
    switch (status) {
      case 401:
        return "The notes service did not accept this site's API key. " +
               "Ask the site's maintainers to check the widget's api-key.";
      case 403:
        return "This site's API key may not ask questions.";
      case 413:
      case 422:
        return "The service could not take this question. Try a shorter one.";
      case 429: {
        const wait = retryAfterSeconds(retryAfter);
        return "Too many questions at once. " +
               (wait !== null ? `Please try again in ${formatWait(wait)}.` : "Please try again in a moment.");
      }
      case 503:
        return "The notes service is still starting up (its index is loading). Please try again in a moment.";
      default:
        return `The notes service answered with an error (HTTP ${status}). Please try again later.`;
    }
  }

  function slug(text) {
    return String(text).trim().toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-");
  }

  function fileName(source) {
    return String(source).split(/[\\/]/).filter(Boolean).pop() || String(source);
  }

  /** An http(s) URL as given, else null (a link never runs script). */
  function webUrl(value) {
    if (typeof value !== "string" || !value) return null;
    try {
      const url = new URL(value, location.href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (_) {
      return null;
    }
  }

  /** Where a citation links to: the service's `url`, else `template` filled in, else null. */
  function citationUrl(template, root, cite) {
    return webUrl(cite.url) || sourceUrl(template, root, cite);
  }

  /** The URL a citation links to under `template`, or null (see the header comment). */
  function sourceUrl(template, root, cite) {
    if (!template) return null;
    let path = String(cite.source || "");
    if (root && path.startsWith(root)) path = path.slice(root.length);
    path = path.replace(/^[\\/]+/, "");
    const heading = (cite.heading_path || []).slice(-1)[0] || "";
    const line = cite.line_start ?? cite.line ?? cite.start_line;
    const anchor = cite.anchor || (heading && cite.page == null ? slug(heading) : "");
    const num = (v) => (v != null ? encodeURIComponent(v) : undefined);
    const values = {
      path: path.split(/[\\/]/).map(encodeURIComponent).join("/"),
      path_noext: path.replace(/\.[^./\\]+$/, "").split(/[\\/]/).map(encodeURIComponent).join("/"),
      source: encodeURIComponent(cite.source || ""),
      name: encodeURIComponent(fileName(cite.source || "")),
      anchor: anchor ? encodeURIComponent(anchor) : undefined,
      heading: heading ? encodeURIComponent(heading) : undefined,
      line: num(line),
      line_start: num(line),
      line_end: num(cite.line_end),
      page: num(cite.page),
      start: cite.start != null ? String(cite.start) : undefined,
      end: cite.end != null ? String(cite.end) : undefined,
      node_id: cite.node_id ? encodeURIComponent(cite.node_id) : undefined,
    };
    const fill = (part) => {
      let missing = false;
      const out = part.replace(/\{(\w+)\}/g, (m, key) => {
        if (!(key in values)) return m;
        if (values[key] === undefined) missing = true;
        return values[key] ?? "";
      });
      return missing ? null : out;
    };
    const hash = template.indexOf("#");
    const base = fill(hash < 0 ? template : template.slice(0, hash));
    if (base === null) return null;
    const fragment = hash < 0 ? "" : fill(template.slice(hash));
    try {
      const url = new URL(base + (fragment || ""), location.href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (_) {
      return null;
    }
  }

  function nextFrame() {
    // a paint between deltas, so each one shows; timers still run in background tabs
    return new Promise((resolve) => {
      if (document.hidden) setTimeout(resolve, 0);
      else requestAnimationFrame(() => resolve());
    });
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  // -- the element ----------------------------------------------------------------------------

  class NotesragChat extends HTMLElement {
    static get observedAttributes() {
      return ["title", "placeholder", "open"];
    }

    constructor() {
      super();
      this._id = ++counter;
      this._turns = []; // completed {role, content} messages, oldest first
      this._controller = null; // AbortController of the answer in flight
      const shadow = this.attachShadow({ mode: "open" });
      const tpl = document.createElement("template");
      tpl.innerHTML = TEMPLATE;
      const sheet = sharedSheet();
      if (sheet) shadow.adoptedStyleSheets = [sheet];
      else shadow.append(Object.assign(document.createElement("style"), { textContent: STYLE }));
      shadow.append(tpl.content.cloneNode(true));
      const $ = (s) => shadow.querySelector(s);
      this._launcher = $(".launcher");
      this._launcherLabel = $(".launcher-label");
      this._panel = $(".panel");
      this._title = $(".title");
      this._log = $(".log");
      this._form = $(".composer");
      this._input = $(".question");
      this._send = $(".send");
      this._stop = $(".stop");
      const titleId = `notesrag-title-${this._id}`;
      const inputId = `notesrag-q-${this._id}`;
      const panelId = `notesrag-panel-${this._id}`;
      this._title.id = titleId;
      this._panel.id = panelId;
      this._panel.setAttribute("aria-labelledby", titleId);
      this._launcher.setAttribute("aria-controls", panelId);
      this._input.id = inputId;
      $(".composer label").htmlFor = inputId;
      this._log.setAttribute("aria-label", "Conversation");
      this._intro = $(".intro").cloneNode(true);

      this._launcher.addEventListener("click", () => (this.isOpen ? this.close() : this.open()));
      $(".close").addEventListener("click", () => this.close());
      $(".new").addEventListener("click", () => this.reset());
      this._stop.addEventListener("click", () => this.cancel());
      this._form.addEventListener("submit", (e) => {
        e.preventDefault();
        this.ask(this._input.value);
      });
      this._input.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
          e.preventDefault();
          this.ask(this._input.value);
        }
      });
      this._input.addEventListener("input", () => this._fit());
      shadow.addEventListener("keydown", (e) => {
        if (e.key === "Escape" && this.isOpen) {
          e.preventDefault();
          e.stopPropagation();
          this.close();
        }
      });
      this._log.addEventListener("click", (e) => {
        const ref = e.target.closest(".ref");
        if (ref) this._showSource(ref);
      });
      this._render();
    }

    attributeChangedCallback(name, _old, value) {
      if (name === "open") this._setOpen(value !== null, false);
      else this._render();
    }

    disconnectedCallback() {
      this.cancel();
    }

    get endpoint() {
      const value = (this.getAttribute("endpoint") || "").trim();
      return (value || SCRIPT_ORIGIN).replace(/\/+$/, "");
    }

    get isOpen() {
      return !this._panel.hidden;
    }

    /** The conversation so far, as chat messages (a copy). */
    get conversation() {
      return this._turns.map((t) => ({ ...t }));
    }

    open() {
      this._setOpen(true, true);
    }

    close() {
      this._setOpen(false, true);
    }

    /** Forget the conversation (stopping an answer in flight). */
    reset() {
      this.cancel();
      this._turns = [];
      this._log.replaceChildren(this._intro.cloneNode(true));
      this._input.focus();
    }

    /** Stop the answer in flight, if any. */
    cancel() {
      if (this._controller) this._controller.abort();
    }

    _render() {
      if (!this._title) return;
      const title = this.getAttribute("title") || "Ask the notes";
      this._title.textContent = title;
      this._launcherLabel.textContent = title;
      this._launcher.setAttribute("aria-label", title);
      this._input.placeholder = this.getAttribute("placeholder") || "Ask a question…";
    }

    _setOpen(open, moveFocus) {
      if (open === this.isOpen) return;
      this._panel.hidden = !open;
      this._launcher.setAttribute("aria-expanded", String(open));
      this._launcher.setAttribute("aria-label", open ? "Close the chat" : this._title.textContent);
      if (moveFocus) (open ? this._input : this._launcher).focus();
      if (open) this._scroll(true);
      this.dispatchEvent(new CustomEvent(open ? "notesrag-open" : "notesrag-close", { bubbles: true, composed: true }));
    }

    _fit() {
      this._input.style.height = "";
      if (!this._input.value) return; // the placeholder does not count
      this._input.style.height = "auto";
      this._input.style.height = `${Math.max(40, Math.min(this._input.scrollHeight + 2, 132))}px`;
    }

    _scroll(force) {
      const log = this._log;
      if (force || log.scrollHeight - log.scrollTop - log.clientHeight < 80) log.scrollTop = log.scrollHeight;
    }

    _busy(busy) {
      this._send.hidden = busy;
      this._stop.hidden = !busy;
      this.toggleAttribute("busy", busy);
    }

    /** Ask `question`; resolves when the answer is complete, cancelled or failed. */
    async ask(question) {
      question = String(question || "").trim();
      if (!question || this._controller) return;
      this.open();
      this._log.querySelector(".intro")?.remove();
      this._input.value = "";
      this._fit();

      const user = el("div", "msg user");
      user.append(el("p", "bubble", question));
      const bot = this._botMessage();
      this._log.append(user, bot.node);
      this._scroll(true);

      const controller = new AbortController();
      this._controller = controller;
      this._busy(true);
      const history = this._turns.slice(-MAX_HISTORY_MESSAGES);
      try {
        const result = await this._stream(question, history, controller.signal, bot);
        this._turns.push({ role: "user", content: question }, { role: "assistant", content: result.answer });
        bot.finish(result);
      } catch (err) {
        if (controller.signal.aborted) bot.cancelled();
        else if (err instanceof WidgetError) bot.error(err.message, err.detail);
        else bot.error(this._networkMessage(err), "");
      } finally {
        this._controller = null;
        const stopHadFocus = this.shadowRoot.activeElement === this._stop;
        this._busy(false);
        this._scroll(false);
        if (stopHadFocus && this.isOpen) this._input.focus(); // not lost with the vanished button
      }
    }

    _networkMessage(err) {
      const name = err && err.name;
      if (name === "TypeError") {
        return `Could not reach the notes service at ${this.endpoint}. Check your connection; ` +
               "if the service is up, it may not allow questions from this site (CORS).";
      }
      return `Something went wrong while reading the answer (${(err && err.message) || err}).`;
    }

    async _stream(question, history, signal, bot) {
      const headers = { "Content-Type": "application/json", Accept: "text/event-stream" };
      const key = (this.getAttribute("api-key") || "").trim();
      if (key) headers.Authorization = `Bearer ${key}`;
      const topK = parseInt(this.getAttribute("top-k") || "", 10);
      const followUp = history.length > 0;
      const body = followUp
        ? { model: "notesrag", stream: true, messages: [...history, { role: "user", content: question }] }
        : { question, stream: true };
      if (topK > 0) body.top_k = topK;
      const url = `${this.endpoint}${followUp ? "/v1/chat/completions" : "/v1/ask"}`;
      // no `cache: "no-store"`: browsers then send Cache-Control: no-cache, which would make the
      // service skip its answer cache; POST responses are not stored by HTTP caches anyway
      const res = await fetch(url, {
        method: "POST", headers, body: JSON.stringify(body), signal, credentials: "omit",
      });
      if (!res.ok) {
        let message = "";
        try {
          const data = await res.json();
          message = (data && data.error && data.error.message) || "";
        } catch (_) { /* not JSON: the status says enough */ }
        throw new WidgetError(httpErrorMessage(res.status, res.headers.get("Retry-After")), message);
      }
      if (!res.body || !(res.headers.get("Content-Type") || "").includes("text/event-stream")) {
        throw new WidgetError("The notes service sent an unexpected response (not an event stream).");
      }
      return followUp ? this._readChat(res.body, bot) : this._readAsk(res.body, bot);
    }

    /** The native stream: contexts, citations, delta..., done (or error). */
    async _readAsk(body, bot) {
      for await (const { event, data } of readSSE(body)) {
        const payload = parseJSON(data);
        if (event === "error" || (payload && payload.error)) throw serverError(payload);
        if (event === "contexts") bot.searching(payload.contexts ? payload.contexts.length : 0);
        else if (event === "citations") bot.citations(payload.citations || []);
        else if (event === "delta") {
          bot.delta(payload.text || "");
          this._scroll(false);
          await nextFrame();
        } else if (event === "done") {
          return { answer: payload.answer, answerable: payload.answerable, citations: payload.citations || [],
                   answerId: payload.answer_id || "", lowConfidence: payload.low_confidence === true };
        }
      }
      throw new WidgetError("The answer stopped before it was complete. Please try again.");
    }

    /** The OpenAI-style stream: chunks with content deltas; the last one carries the citations. */
    async _readChat(body, bot) {
      let text = "";
      let final = null;
      bot.searching(0);
      for await (const { data } of readSSE(body)) {
        if (data === "[DONE]") break;
        const chunk = parseJSON(data);
        if (!chunk) continue;
        if (chunk.error) throw serverError(chunk);
        const content = chunk.choices && chunk.choices[0] && chunk.choices[0].delta && chunk.choices[0].delta.content;
        if (content) {
          text += content;
          bot.delta(content);
          this._scroll(false);
          await nextFrame();
        }
        if (chunk.citations || chunk.notesrag) {
          const info = chunk.notesrag || {};
          final = { answer: text, answerable: info.answerable !== false, citations: chunk.citations || [],
                    answerId: info.answer_id || "", lowConfidence: info.low_confidence === true };
        }
      }
      if (!final) throw new WidgetError("The answer stopped before it was complete. Please try again.");
      return final;
    }

    _botMessage() {
      const node = el("div", "msg bot");
      node.dataset.state = "waiting";
      node.setAttribute("aria-busy", "true");
      const bubble = el("div", "bubble");
      const answer = el("p", "answer");
      const status = el("p", "status");
      bubble.append(answer, status);
      node.append(bubble);
      const template = () => this.getAttribute("source-url-template");
      const root = () => this.getAttribute("source-root");
      let text = "";
      let cites = [];
      const setStatus = (label, dots) => {
        status.replaceChildren();
        if (!label) return;
        if (dots) {
          const d = el("span", "dots");
          d.setAttribute("aria-hidden", "true");
          d.append(el("i"), el("i"), el("i"));
          status.append(d);
        }
        status.append(el("span", null, label));
      };
      setStatus("Searching the notes", true);
      const notice = (kind, title) => {
        const head = el("p", "notice-title");
        head.innerHTML = kind === "error" ? ICONS.warn : ICONS.info;
        head.append(el("span", null, title));
        bubble.prepend(head);
      };
      const done = (state) => {
        node.dataset.state = state;
        node.removeAttribute("aria-busy");
      };
      return {
        node,
        searching(n) {
          setStatus(n ? `Reading ${n} passage${n === 1 ? "" : "s"}` : "Searching the notes", true);
        },
        citations(list) {
          cites = list;
        },
        delta(piece) {
          if (node.dataset.state === "waiting") {
            node.dataset.state = "streaming";
            setStatus("Writing", true);
          }
          text += piece;
          answer.textContent = text;
        },
        finish: (result) => {
          setStatus("");
          text = result.answer || text;
          cites = result.citations && result.citations.length ? result.citations : cites;
          if (result.answerable === false) {
            // the service's text says the same in its own words; one clear statement is enough
            done("unanswerable");
            notice("info", "The notes do not cover this");
            answer.textContent = "No passage in the notes answers this question. " +
                                 "Try rephrasing it, or ask about a topic the notes cover.";
            this._feedback(bubble, result.answerId, []);
            return;
          }
          const doubtful = result.lowConfidence === true;
          done(doubtful ? "low-confidence" : "answered");
          renderAnswer(answer, displayText(text, cites), cites.map((c) => c.n));
          if (doubtful) {
            // before the answer, so a reader (and a screen reader) meets it first
            const note = el("p", "confidence-note");
            note.setAttribute("role", "note");
            note.innerHTML = ICONS.warn;
            const words = el("span");
            words.append(el("strong", null, "Low confidence:"),
                         cites.length ? " the notes may not answer this exactly. Check the sources below."
                                      : " the notes may not answer this exactly.");
            note.append(words);
            bubble.prepend(note);
          }
          if (cites.length) {
            bubble.append(el("p", "sources-label", "Sources"));
            const list = el("ol", "sources");
            list.setAttribute("aria-label", "Sources");
            for (const c of cites) list.append(renderCitation(c, citationUrl(template(), root(), c)));
            bubble.append(list);
          }
          this._feedback(bubble, result.answerId, cites);
        },
        cancelled() {
          done("cancelled");
          setStatus(text ? "Stopped. The answer above is incomplete." : "Stopped.", false);
        },
        error(message, detail) {
          done("error");
          answer.textContent = "";
          setStatus("");
          notice("error", "Could not get an answer");
          const p = el("p", "error-text", message);
          p.setAttribute("role", "alert");
          bubble.append(p);
          if (detail) bubble.append(el("p", "error-detail", `The service said: ${detail}`));
        },
      };
    }

    /** Thumbs up/down under an answer (POST /v1/feedback). "Down" is sent at once, then asks which
     *  source was the right one: a citation, or a passage from a short search; sending that
     *  replaces the rating with one that names the source (and an optional comment). */
    _feedback(bubble, answerId, cites) {
      if (!answerId) return; // the service did not put this answer on record
      const box = el("div", "feedback");
      box.setAttribute("role", "group");
      box.setAttribute("aria-label", "Rate this answer");
      const row = el("div", "fb-row");
      const button = (cls, icon, label) => {
        const b = el("button", `fb-btn ${cls}`);
        b.type = "button";
        b.innerHTML = icon;
        b.title = label;
        b.setAttribute("aria-label", label);
        b.setAttribute("aria-pressed", "false");
        return b;
      };
      const up = button("up", ICONS.up, "Helpful");
      const down = button("down", ICONS.down, "Not helpful");
      row.append(el("span", "fb-label", "Was this helpful?"), up, down);
      const status = el("p", "fb-status");
      status.setAttribute("role", "status");
      box.append(row, status);
      bubble.append(box);
      let picker = null;
      const press = (rating) => {
        up.setAttribute("aria-pressed", String(rating === "up"));
        down.setAttribute("aria-pressed", String(rating === "down"));
      };
      const send = async (rating, source, comment) => {
        box.dataset.state = "sending";
        const body = { answer_id: answerId, rating };
        if (source) body.source = source;
        if (comment) body.comment = comment;
        try {
          const res = await fetch(`${this.endpoint}/v1/feedback`, {
            method: "POST", headers: this._jsonHeaders(), body: JSON.stringify(body), credentials: "omit",
          });
          if (!res.ok) throw new WidgetError(httpErrorMessage(res.status, res.headers.get("Retry-After")),
                                             await errorMessage(res));
          box.dataset.state = "sent";
          return true;
        } catch (err) {
          box.dataset.state = "error";
          const detail = err instanceof WidgetError && err.detail ? ` The service said: ${err.detail}` : "";
          status.textContent = `Could not send the rating. ${err instanceof WidgetError ? err.message : ""}${detail}`;
          return false;
        }
      };
      up.addEventListener("click", async () => {
        press("up");
        if (picker) { picker.remove(); picker = null; }
        if (await send("up")) status.textContent = "Thanks for the feedback.";
      });
      down.addEventListener("click", async () => {
        press("down");
        if (!(await send("down"))) return;
        status.textContent = "Thanks. Which source would have been the right one?";
        if (!picker) {
          picker = this._sourcePicker(cites, async (source, comment) => {
            if (await send("down", source, comment)) {
              picker.remove();
              picker = null;
              status.textContent = source ? "Thanks: the right source is noted." : "Thanks for the feedback.";
              down.focus();
            }
          }, () => {
            picker.remove();
            picker = null;
            down.focus();
          });
          box.append(picker);
        }
        const first = picker.querySelector("input");
        if (first) first.focus();
        this._scroll(false);
      });
    }

    /** The "which source was right" form: the answer's citations, a short search, a comment. */
    _sourcePicker(cites, onSend, onCancel) {
      const name = `fb-source-${++counter}`;
      const form = el("form", "fb-pick");
      form.noValidate = true;
      const fieldset = el("fieldset");
      fieldset.append(el("legend", null, "Which source was the right one?"));
      const options = el("div", "fb-options");
      const option = (value, title, where) => {
        const label = el("label", "fb-option");
        const input = el("input");
        input.type = "radio";
        input.name = name;
        input.value = value;
        const text = el("span", null, title);
        if (where) text.append(" ", el("small", null, where));
        label.append(input, text);
        return label;
      };
      for (const c of cites) {
        options.append(option(`c:${c.n}`, `[${c.n}] ${(c.heading_path || []).join(" › ") || fileName(c.source || "")}`,
                              fileName(c.source || "")));
      }
      const hits = el("div", "fb-options fb-hits");
      fieldset.append(options, hits);
      const search = el("div", "fb-search");
      const query = el("input");
      query.type = "search";
      query.setAttribute("aria-label", "Search the notes for the right source");
      query.placeholder = "Or search the notes";
      const go = el("button", "fb-small", "Search");
      go.type = "button";
      search.append(query, go);
      const found = el("p", "fb-found");
      found.setAttribute("role", "status");
      const commentField = el("label", "fb-field", "Comment (optional)");
      const comment = el("textarea");
      comment.maxLength = 2000;
      commentField.append(comment);
      const actions = el("div", "fb-actions");
      const submit = el("button", "fb-small primary", "Send");
      submit.type = "submit";
      const cancel = el("button", "fb-small", "Skip");
      cancel.type = "button";
      actions.append(submit, cancel);
      form.append(fieldset, search, found, commentField, actions);
      const runSearch = async () => {
        const q = query.value.trim();
        if (!q) return;
        found.textContent = "Searching…";
        try {
          const res = await fetch(`${this.endpoint}/v1/search?${new URLSearchParams({ q, k: "5" })}`, {
            headers: this._jsonHeaders(), credentials: "omit",
          });
          if (!res.ok) throw new WidgetError(httpErrorMessage(res.status, res.headers.get("Retry-After")),
                                             await errorMessage(res));
          const data = await res.json();
          hits.replaceChildren(...(data.hits || []).map((h) => option(
            `h:${h.node_id}`, (h.heading_path || []).join(" › ") || fileName(h.source || ""),
            `${fileName(h.source || "")}: ${h.text.replace(/\s+/g, " ").slice(0, 90)}…`)));
          found.textContent = data.hits && data.hits.length ? `${data.hits.length} passages found.` : "No passage found.";
          const firstHit = hits.querySelector("input");
          if (firstHit) firstHit.focus();
        } catch (err) {
          found.textContent = `The search failed. ${err instanceof WidgetError ? err.message : ""}`;
        }
      };
      go.addEventListener("click", runSearch);
      query.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && !e.isComposing) {
          e.preventDefault();
          runSearch();
        }
      });
      cancel.addEventListener("click", onCancel);
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        const picked = form.querySelector(`input[name="${name}"]:checked`);
        let source = null;
        if (picked && picked.value.startsWith("c:")) source = { citation: Number(picked.value.slice(2)) };
        else if (picked) source = { node_id: picked.value.slice(2) };
        onSend(source, comment.value.trim());
      });
      return form;
    }

    _jsonHeaders() {
      const headers = { "Content-Type": "application/json" };
      const key = (this.getAttribute("api-key") || "").trim();
      if (key) headers.Authorization = `Bearer ${key}`;
      return headers;
    }

    _showSource(ref) {
      const bot = ref.closest(".msg.bot");
      const details = bot && bot.querySelector(`details[data-n="${ref.dataset.n}"]`);
      if (!details) return;
      details.open = true;
      details.querySelector("summary").focus();
      details.scrollIntoView({ block: "nearest" });
    }
  }

  /** A failure to show as `message`, with the service's own words as `detail`. */
  class WidgetError extends Error {
    constructor(message, detail = "") {
      super(message);
      this.detail = detail;
    }
  }

  function parseJSON(data) {
    try {
      return JSON.parse(data);
    } catch (_) {
      return null;
    }
  }

  /** The service's error message in a failed response, or "". */
  async function errorMessage(res) {
    try {
      const data = await res.json();
      return (data && data.error && data.error.message) || "";
    } catch (_) {
      return "";
    }
  }

  function serverError(payload) {
    const message = (payload && payload.error && payload.error.message) || "";
    return new WidgetError("The notes service failed while answering. Please try again.", message);
  }

  /** The answer as shown: a part of it that is its cited quote with the line breaks collapsed
   *  (the service's extractive text quotes a list or a diagram on one line) gets the quote's
   *  lines back; anything else (an LLM's words, a part that differs) is shown as sent. */
  function displayText(text, cites) {
    const quotes = new Map((cites || []).map((c) => [Number(c.n), String(c.quote || "")]));
    const flat = (s) => s.replace(/\s+/g, " ").trim();
    let out = "";
    let last = 0;
    let broke = false; // the last part was given its lines: what follows starts a line
    for (const m of text.matchAll(/\[(\d+)\]/g)) {
      let part = text.slice(last, m.index);
      const quote = quotes.get(Number(m[1])) || "";
      if (quote.includes("\n") && flat(part) && flat(part) === flat(quote)) {
        out = out.replace(/[ \t]+$/, "");
        part = `${out ? "\n" : ""}${quote.trim()} `;
        broke = true;
      } else if (broke && part.trim()) {
        part = `\n${part.trimStart()}`;
        broke = false;
      }
      out += part + m[0];
      last = m.index + m[0].length;
    }
    const rest = text.slice(last);
    return out + (broke && rest.trim() ? `\n${rest.trimStart()}` : rest);
  }

  /** The answer with its [n] markers as buttons that open citation n. */
  function renderAnswer(target, text, known) {
    target.replaceChildren();
    const numbers = new Set(known);
    let last = 0;
    for (const m of text.matchAll(/\[(\d+)\]/g)) {
      const n = Number(m[1]);
      if (!numbers.has(n)) continue;
      target.append(text.slice(last, m.index));
      const ref = el("button", "ref", String(n));
      ref.type = "button";
      ref.dataset.n = String(n);
      ref.setAttribute("aria-label", `Source ${n}`);
      target.append(ref);
      last = m.index + m[0].length;
    }
    target.append(text.slice(last));
  }

  function renderCitation(c, url) {
    const li = el("li");
    const details = el("details");
    details.dataset.n = String(c.n);
    const summary = el("summary");
    const num = el("span", "num", String(c.n));
    num.setAttribute("aria-label", `Source ${c.n}:`);
    const where = el("span", "where");
    const path = (c.heading_path || []).join(" › ");
    where.append(el("span", "heading", path || fileName(c.source || "")), el("span", "file", fileName(c.source || "")));
    summary.append(num, where);
    details.append(summary, el("blockquote", null, c.quote || ""));
    if (url) {
      const a = el("a", "open-source", "Open the source ↗");
      a.href = url;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      details.append(a);
    }
    li.append(details);
    return li;
  }

  // the pure parts, for tests and for portals that build their own UI on the same stream
  NotesragChat.utils = Object.freeze({ readSSE, sourceUrl, citationUrl, retryAfterSeconds, httpErrorMessage,
                                       displayText });

  customElements.define(TAG, NotesragChat);
})();

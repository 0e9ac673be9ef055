/* eventsapp dashboard: the two DOM builders every panel uses (dashboard.js, trends.js, funnel.js),
 * loaded first. svg(tag, attrs, parent) makes an SVG element; html(tag, attrs, text) an HTML one
 * ("className" sets the class, text is set as textContent, never parsed as HTML). */
(() => {
  "use strict";

  const SVGNS = "http://www.w3.org/2000/svg";

  function svg(tag, attrs = {}, parent = null) {
    const el = document.createElementNS(SVGNS, tag);
    Object.entries(attrs).forEach(([k, v]) => el.setAttribute(k, v));
    if (parent) parent.appendChild(el);
    return el;
  }

  function html(tag, attrs = {}, text = null) {
    const el = document.createElement(tag);
    Object.entries(attrs).forEach(([k, v]) => {
      if (k === "className") el.className = v;
      else el.setAttribute(k, v);
    });
    if (text !== null) el.textContent = text;
    return el;
  }

  window.eventsappDom = Object.freeze({ svg, html });
})();

/**
 * The web app's style sheet, served as `/web/style.css` (the pages' CSP
 * allows only same-origin styles): a light palette and a dark one under
 * `prefers-color-scheme: dark`, chart colours as custom properties, a layout
 * that never scrolls sideways at 420 px (tables scroll in their own box, long
 * names and hashes wrap) and a visible focus ring.
 *
 * @module
 */

/** The style sheet. */
export const STYLE_CSS: string = `:root{color-scheme:light dark;
--bg:#fbfbfc;--fg:#1c1f24;--muted:#5b6472;--card:#fff;--line:#d9dde3;--grid:#eceef1;
--accent:#0a58ca;--focus:#0a58ca;--bad:#b42318;--ok:#067647;--warn:#9a6700;
--s0:#1f6feb;--s1:#d1495b;--s2:#2a9d57;--s3:#b7791f;--s4:#8250df;--s5:#0f8b8d;--s6:#c2185b;--s7:#6b7280}
@media (prefers-color-scheme:dark){:root{
--bg:#0f1216;--fg:#e3e6ea;--muted:#9aa4b2;--card:#171b21;--line:#2c333d;--grid:#232932;
--accent:#6cb6ff;--focus:#6cb6ff;--bad:#ff7b72;--ok:#56d364;--warn:#e3b341;
--s0:#58a6ff;--s1:#ff7b72;--s2:#56d364;--s3:#e3b341;--s4:#bc8cff;--s5:#39c5cf;--s6:#f778ba;--s7:#9aa4b2}}
*{box-sizing:border-box}
html{background:var(--bg);color:var(--fg)}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;overflow-wrap:anywhere}
a{color:var(--accent)}
:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
header.top{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;justify-content:space-between;
padding:.6rem 1rem;border-bottom:1px solid var(--line);background:var(--card)}
header.top nav{display:flex;gap:1rem;align-items:center;flex-wrap:wrap}
header.top .brand{font-weight:650;text-decoration:none;color:var(--fg)}
main{max-width:72rem;margin:0 auto;padding:1rem}
h1{font-size:1.5rem;margin:.2rem 0 .3rem;line-height:1.25}
h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.88em}
.muted{color:var(--muted)}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.8rem 1rem}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(14rem,1fr));gap:.6rem 1.2rem;margin:0}
.facts div{min-width:0}.facts dt{color:var(--muted);font-size:.85em}.facts dd{margin:0;font-weight:550}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:999px;border:1px solid currentColor;font-size:.85em;font-weight:600}
.st-training{color:var(--accent)}.st-trained{color:var(--ok)}.st-new{color:var(--muted)}.stalled{color:var(--warn)}
progress{width:100%;max-width:16rem;height:.6rem;accent-color:var(--accent);vertical-align:middle}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,30rem),1fr));gap:1rem}
figure.chart{margin:0;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.5rem .6rem;min-width:0}
figure.chart figcaption{font-weight:600;font-size:.95em}
figure.chart svg{display:block;width:100%;height:auto;touch-action:pan-y}
.legend{display:flex;flex-wrap:wrap;gap:.2rem .8rem;font-size:.8em;color:var(--muted);margin:.2rem 0 0;padding:0;list-style:none}
.legend i{display:inline-block;width:.9em;height:.2em;vertical-align:middle;margin-right:.3em;background:currentColor}
.readout{display:block;min-height:1.3em;font-size:.8em;color:var(--muted)}
svg .grid{stroke:var(--grid);stroke-width:1}
svg .axis{fill:var(--muted);font-size:13px}
svg .line{fill:none;stroke-width:1.6;stroke-linejoin:round;stroke-linecap:round}
svg .dot{stroke:none}
svg .best{stroke:var(--ok);stroke-width:1.2;stroke-dasharray:4 3}
svg .besttext{fill:var(--ok);font-size:13px}
svg .cursor{stroke:var(--muted);stroke-width:1;visibility:hidden}
svg.active .cursor{visibility:visible}
${
  [0, 1, 2, 3, 4, 5, 6, 7].map((i) =>
    `.c${i}{color:var(--s${i})}svg .c${i}{stroke:var(--s${i});fill:var(--s${i})}svg .line.c${i}{fill:none}`
  ).join("\n")
}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;background:var(--card)}
th,td{border:1px solid var(--line);padding:.25rem .5rem;text-align:right;white-space:nowrap}
th{background:var(--grid);font-weight:600}
td.l,th.l{text-align:left;white-space:normal}
table.models{width:100%}
table.models td.name{min-width:8rem;max-width:24rem}
details{margin:.8rem 0}summary{cursor:pointer;font-weight:600}
form.inline{display:inline}
button,input[type=submit]{font:inherit;padding:.3rem .8rem;border-radius:6px;border:1px solid var(--line);background:var(--card);color:var(--fg);cursor:pointer}
input[type=search],input[type=password]{font:inherit;padding:.35rem .5rem;border-radius:6px;border:1px solid var(--line);background:var(--bg);color:var(--fg);max-width:100%}
.login{max-width:26rem;margin:2rem auto}.login label{display:block;margin:.6rem 0 .2rem}.login input[type=password]{width:100%}
.error{color:var(--bad)}
.pager{display:flex;gap:1rem;align-items:center;flex-wrap:wrap;margin:.8rem 0}
ul.files{padding-left:1.2rem}ul.files li{margin:.3rem 0}
`;

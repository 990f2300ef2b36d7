// Client-side routing: every path is served index.html, this script picks the view.
document.title = `jaam sample — ${location.pathname}`;

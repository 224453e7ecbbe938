// Records the page's errors and warnings into the DOM, so they can be read without devtools (and by
// `chromium --dump-dom` in tests): uncaught errors, failed resource loads, unhandled promise rejections,
// console.error and console.warn. Errors go to <pre id="console-errors">, warnings to
// <pre id="console-warnings">; both stay hidden while empty. An error while the viewer is still loading
// marks it failed (<body data-viewer="error">), so a module that never ran does not read "loading" forever.
// Classic script, first in <head>.
(function () {
  const logs = { errors: [], warnings: [] };
  window.__reportLogs = logs;
  function show() {
    for (const [kind, id] of [['errors', 'console-errors'], ['warnings', 'console-warnings']]) {
      const el = document.getElementById(id);
      if (el && logs[kind].length) {
        el.hidden = false;
        el.textContent = logs[kind].join('\n');
      }
    }
  }
  function text(args) {
    return Array.from(args, (a) => (a instanceof Error ? a.message : String(a))).join(' ');
  }
  function push(kind, message) {
    logs[kind].push(message);
    if (document.readyState !== 'loading') show();
    if (kind === 'errors' && document.body && document.body.dataset.viewer === 'loading') {
      document.body.dataset.viewer = 'error';
      const status = document.getElementById('viewer-status');
      if (status) status.textContent = 'viewer failed: ' + message;
    }
  }
  window.addEventListener('error', (event) => {
    const target = event.target;
    if (target && target !== window && (target.src || target.href)) {
      push('errors', 'failed to load ' + (target.src || target.href));
    } else {
      push('errors', (event.message || 'error') + (event.filename ? ' (' + event.filename.slice(0, 80) + ':' + event.lineno + ')' : ''));
    }
  }, true);
  window.addEventListener('unhandledrejection', (event) => {
    const reason = event.reason;
    push('errors', 'unhandled rejection: ' + (reason && reason.message ? reason.message : String(reason)));
  });
  const originalError = console.error.bind(console);
  const originalWarn = console.warn.bind(console);
  console.error = function () { push('errors', text(arguments)); originalError.apply(null, arguments); };
  console.warn = function () { push('warnings', text(arguments)); originalWarn.apply(null, arguments); };
  document.addEventListener('DOMContentLoaded', show);
})();

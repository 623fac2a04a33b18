/**
 * Overview auto-refresh: every 15 s (while the tab is visible) fetch the table body for the same
 * query and swap it in. Rows keep a fixed height and the page size is fixed, so nothing moves.
 * Skipped while keyboard focus is inside the table, so a refresh never steals it.
 */
const REFRESH_MS = 15_000;

const note = document.getElementById('refresh-note');
const rows = document.getElementById('tenant-rows');
const url = note?.dataset.rowsUrl;

async function refresh(): Promise<void> {
  if (!rows || !url || document.hidden || rows.contains(document.activeElement)) return;
  const response = await fetch(url, { headers: { accept: 'text/html' }, credentials: 'same-origin' });
  // A redirect means the session ended: reload so the login page shows.
  if (response.redirected || response.status === 401 || response.status === 403) {
    window.location.reload();
    return;
  }
  if (!response.ok) return;
  rows.innerHTML = await response.text();
  rows.dataset.refreshedAt = new Date().toISOString();
}

if (rows && url) {
  setInterval(() => {
    refresh().catch(() => undefined);
  }, REFRESH_MS);
}

// A module, so its names stay out of the global scope.
export {};

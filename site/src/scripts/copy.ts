/** The copy button appears only where the clipboard API exists; without JS the field can be selected. */
const button = document.getElementById('copy-key');
const status = document.getElementById('copy-status');
const field = button?.dataset.copy ? document.getElementById(button.dataset.copy) : null;

if (button && field instanceof HTMLInputElement && navigator.clipboard) {
  button.hidden = false;
  button.addEventListener('click', () => {
    navigator.clipboard.writeText(field.value).then(
      () => {
        if (status) status.textContent = 'Copied to the clipboard.';
      },
      () => {
        field.select();
        if (status) status.textContent = 'Copy failed: the key is selected, press Ctrl+C.';
      },
    );
  });
}

// A module, so its names stay out of the global scope.
export {};

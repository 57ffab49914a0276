import type { ComponentChildren } from "preact";
import { useLayoutEffect, useRef } from "preact/hooks";

/** A modal question: Escape or "Cancel" closes it, the focus stays inside while it is open and returns after. */
export function ConfirmDialog(props: {
  title: string;
  children?: ComponentChildren;
  confirmLabel?: string;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  const box = useRef<HTMLDivElement>(null);
  const cancel = useRef(props.onCancel);
  cancel.current = props.onCancel;
  // A layout effect: the focus and the Escape handler are in place before the dialog is even painted.
  useLayoutEffect(() => {
    const before = document.activeElement as HTMLElement | null;
    box.current?.querySelector<HTMLButtonElement>("button[data-cancel]")?.focus();
    // Escape closes the dialog wherever the focus is (even if a click moved it out).
    const onEscape = (event: KeyboardEvent) => {
      if (event.key === "Escape") {
        event.preventDefault();
        cancel.current();
      }
    };
    document.addEventListener("keydown", onEscape);
    return () => {
      document.removeEventListener("keydown", onEscape);
      before?.focus?.();
    };
  }, []);
  const onKeyDown = (event: KeyboardEvent) => {
    if (event.key === "Tab" && box.current) {
      const buttons = [...box.current.querySelectorAll<HTMLElement>("button")];
      const first = buttons[0];
      const last = buttons[buttons.length - 1];
      if (event.shiftKey && document.activeElement === first) {
        event.preventDefault();
        last?.focus();
      } else if (!event.shiftKey && document.activeElement === last) {
        event.preventDefault();
        first?.focus();
      }
    }
  };
  return (
    <div class="backdrop" onClick={(e) => e.target === e.currentTarget && props.onCancel()}>
      <div
        ref={box}
        class="dialog"
        role="dialog"
        aria-modal="true"
        aria-labelledby="dialog-title"
        onKeyDown={onKeyDown}
      >
        <h2 id="dialog-title">{props.title}</h2>
        {props.children}
        <div class="actions">
          <button type="button" class="danger" onClick={props.onConfirm}>
            {props.confirmLabel ?? "Confirm"}
          </button>
          <button type="button" data-cancel onClick={props.onCancel}>
            Cancel
          </button>
        </div>
      </div>
    </div>
  );
}

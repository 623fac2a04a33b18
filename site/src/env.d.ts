/// <reference types="astro/client" />

declare namespace App {
  interface Locals {
    /** Set by the middleware for a valid session cookie. */
    session: import('./lib/session.ts').Session | undefined;
    /** The CSRF token every form on the page carries. */
    csrf: string;
  }
}

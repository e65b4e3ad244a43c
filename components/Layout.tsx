/** The HTML shell every page shares. */
import type { ComponentChildren } from "preact";

/** Page frame with title, stylesheet and header. */
export function Layout(props: { title: string; children: ComponentChildren }) {
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>{props.title}</title>
        <link rel="stylesheet" href="/static/style.css" />
        <link rel="icon" href="/static/favicon.svg" type="image/svg+xml" />
      </head>
      <body>
        <header class="site">
          <a href="/" class="brand">WebSocks</a>
        </header>
        <main>{props.children}</main>
      </body>
    </html>
  );
}

/** The page every page route answers an error with: the status, the reason, a way back. */
import { Layout, type LayoutUser } from "./Layout.tsx";

/** An error as a page; a signed-in user is led back to the dashboard instead of the start. */
export function ErrorPage(props: { status: number; message: string; user?: LayoutUser | null }) {
  const { status, message, user } = props;
  return (
    <Layout title={`${status}: WebSocks`} user={user}>
      <section class="narrow">
        <h1>
          {status === 404 ? "Not found" : status === 403 ? "Refused" : "Something went wrong"}
        </h1>
        <p class="error-text">{message}</p>
        <p>
          <a href={user ? "/dashboard" : "/"}>Back to {user ? "the dashboard" : "the start"}</a>
        </p>
      </section>
    </Layout>
  );
}

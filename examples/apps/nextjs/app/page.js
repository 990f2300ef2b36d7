import { message } from "./message";

// Rendered on the server at every request.
export const dynamic = "force-dynamic";

export default function Page() {
  return (
    <main>
      <h1 id="message">{message}</h1>
      <p id="greeting">{process.env.GREETING ?? "(GREETING is not set)"}</p>
      <p id="time">rendered at {new Date().toISOString()}</p>
      <img src="/jaam.svg" alt="jaam" width="32" height="32" />
    </main>
  );
}

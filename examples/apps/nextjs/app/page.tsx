import { Suspense } from "react";
import { connection } from "next/server";
import Image from "next/image";
import { message } from "./message";

// Rendered on the server at every request: `connection()` waits for one.
async function AtRequest() {
  await connection();
  return (
    <>
      <p id="greeting">{process.env.GREETING ?? "(GREETING is not set)"}</p>
      <p id="time">rendered at {new Date().toISOString()}</p>
    </>
  );
}

export default function Page() {
  return (
    <main className="flex flex-col gap-2">
      <h1 id="message" className="text-2xl font-bold">
        {message}
      </h1>
      <Suspense>
        <AtRequest />
      </Suspense>
      <Image src="/jaam.svg" alt="jaam" width={32} height={32} unoptimized />
    </main>
  );
}

import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { BrowserRouter, Link, Route, Routes } from "react-router-dom";
import { message } from "./message";

function Home() {
  return <h1 id="message">{message}</h1>;
}

function Team() {
  return <h1 id="team">the team page, routed in the browser</h1>;
}

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <BrowserRouter>
      <nav>
        <Link to="/">home</Link> · <Link to="/about/team">team</Link>
      </nav>
      <Routes>
        <Route path="/" element={<Home />} />
        <Route path="/about/team" element={<Team />} />
        <Route path="*" element={<h1>not found</h1>} />
      </Routes>
    </BrowserRouter>
  </StrictMode>,
);

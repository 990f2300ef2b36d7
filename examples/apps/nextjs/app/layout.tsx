import type { Metadata } from "next";
import "./globals.css";

export const metadata: Metadata = { title: "jaam Next.js sample" };

export default function RootLayout({ children }: Readonly<{ children: React.ReactNode }>) {
  return (
    <html lang="en">
      <body className="p-8 font-sans">{children}</body>
    </html>
  );
}

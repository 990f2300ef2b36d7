/** @type {import('next').NextConfig} */
const nextConfig = {
  // The instance builds offline from the registry's packages alone.
  eslint: { ignoreDuringBuilds: true },
};

export default nextConfig;

// One request through l402-proxy with Java 17's java.net.http.HttpClient.
//
// HttpClient reads no proxy environment variables, so this program parses HTTPS_PROXY /
// HTTP_PROXY (http://agent:key@host:port) itself and configures:
//   - a ProxySelector for host:port, and an Authenticator answering the proxy's 407 with
//     agent:key (HttpClient never sends proxy credentials before a 407);
//   - an SSLContext trusting the proxy's CA, read from the PEM file in $L402_PROXY_CA
//     (a truststore via -Djavax.net.ssl.trustStore works too);
// and must run with -Djdk.http.auth.tunneling.disabledSchemes= (empty): by default the JDK
// refuses Basic credentials for CONNECT, so every HTTPS request would end in a 407.
//
//   java -Djdk.http.auth.tunneling.disabledSchemes= Client METHOD URL [JSON_BODY]
//
// Prints the fixed format tests/clients.rs parses (see ../client.py).

import java.io.FileInputStream;
import java.io.InputStream;
import java.io.PrintStream;
import java.net.Authenticator;
import java.net.InetSocketAddress;
import java.net.PasswordAuthentication;
import java.net.ProxySelector;
import java.net.URI;
import java.net.URLDecoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public class Client {
    /** An SSLContext trusting exactly the certificates in a PEM file. */
    static SSLContext trusting(String pemFile) throws Exception {
        KeyStore store = KeyStore.getInstance(KeyStore.getDefaultType());
        store.load(null, null);
        try (InputStream in = new FileInputStream(pemFile)) {
            int i = 0;
            for (Certificate c : CertificateFactory.getInstance("X.509").generateCertificates(in)) {
                store.setCertificateEntry("ca-" + i++, c);
            }
        }
        TrustManagerFactory tmf =
                TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(store);
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(null, tmf.getTrustManagers(), null);
        return ctx;
    }

    static String env(String... names) {
        for (String n : names) {
            String v = System.getenv(n);
            if (v != null && !v.isEmpty()) {
                return v;
            }
        }
        return null;
    }

    public static void main(String[] args) throws Exception {
        String method = args[0];
        URI target = URI.create(args[1]);
        String body = args.length > 2 ? args[2] : null;
        PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);

        String proxy = "https".equals(target.getScheme())
                ? env("HTTPS_PROXY", "https_proxy")
                : env("HTTP_PROXY", "http_proxy");
        HttpClient.Builder builder = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(30));
        if (proxy != null) {
            URI p = URI.create(proxy);
            builder.proxy(ProxySelector.of(new InetSocketAddress(p.getHost(), p.getPort())));
            String userInfo = p.getRawUserInfo();
            if (userInfo != null) {
                String[] parts = userInfo.split(":", 2);
                String user = URLDecoder.decode(parts[0], StandardCharsets.UTF_8);
                String key = parts.length > 1 ? URLDecoder.decode(parts[1], StandardCharsets.UTF_8) : "";
                builder.authenticator(new Authenticator() {
                    @Override
                    protected PasswordAuthentication getPasswordAuthentication() {
                        if (getRequestorType() != RequestorType.PROXY) {
                            return null;
                        }
                        return new PasswordAuthentication(user, key.toCharArray());
                    }
                });
            }
        }
        String ca = env("L402_PROXY_CA");
        if (ca != null) {
            builder.sslContext(trusting(ca));
        }
        HttpClient client = builder.build();

        HttpRequest.Builder req = HttpRequest.newBuilder(target).timeout(Duration.ofSeconds(30));
        if (body != null) {
            req.header("Content-Type", "application/json")
                    .method(method, HttpRequest.BodyPublishers.ofString(body));
        } else {
            req.method(method, HttpRequest.BodyPublishers.noBody());
        }
        HttpResponse<byte[]> res;
        try {
            res = client.send(req.build(), HttpResponse.BodyHandlers.ofByteArray());
        } catch (java.io.IOException e) {
            out.println("ERROR " + (e.getClass().getName() + ": " + e.getMessage()).replaceAll("\\s+", " "));
            out.flush();
            return;
        }
        out.println("STATUS " + res.statusCode());
        for (Map.Entry<String, List<String>> h : res.headers().map().entrySet()) {
            String name = h.getKey().toLowerCase();
            if (name.startsWith("x-l402-proxy-") || name.equals("proxy-authenticate")) {
                for (String v : h.getValue()) {
                    out.println("HEADER " + name + ": " + v);
                }
            }
        }
        out.println("BODY");
        if (res.body() != null) { // null for a 407 to CONNECT
            out.write(res.body());
        }
        out.flush();
    }
}

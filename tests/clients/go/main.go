// One request through l402-proxy with Go's net/http, configured the way an agent would be.
//
// http.ProxyFromEnvironment never proxies localhost or loopback targets (whatever NO_PROXY
// says), so this program uses its own Proxy func reading HTTPS_PROXY / HTTP_PROXY; for public
// hosts ProxyFromEnvironment is fine. user:key@ in the proxy URL becomes
// Proxy-Authorization: Basic, for CONNECT too. SSL_CERT_FILE (read by crypto/x509 on Linux)
// trusts the proxy's CA.
//
// Usage: main METHOD URL [JSON_BODY]. Prints the fixed format tests/clients.rs parses (see
// ../client.py).
package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// proxyFor returns the proxy from the environment for the request's scheme, loopback included.
func proxyFor(req *http.Request) (*url.URL, error) {
	names := []string{"HTTP_PROXY", "http_proxy"}
	if req.URL.Scheme == "https" {
		names = []string{"HTTPS_PROXY", "https_proxy"}
	}
	for _, name := range names {
		if v := os.Getenv(name); v != "" {
			return url.Parse(v)
		}
	}
	return nil, nil
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: main METHOD URL [JSON_BODY]")
		os.Exit(2)
	}
	method, target := os.Args[1], os.Args[2]
	var body io.Reader
	if len(os.Args) > 3 {
		body = strings.NewReader(os.Args[3])
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		fmt.Printf("ERROR %s\n", err)
		return
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = proxyFor
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	res, err := client.Do(req)
	if err != nil {
		// A 407 to CONNECT comes back as an error with the status text only:
		// "proxyconnect ...: Proxy Authentication Required".
		fmt.Printf("ERROR %s\n", strings.Join(strings.Fields(err.Error()), " "))
		return
	}
	defer res.Body.Close()
	content, err := io.ReadAll(res.Body)
	if err != nil {
		fmt.Printf("ERROR reading the body: %s\n", err)
		return
	}
	fmt.Printf("STATUS %d\n", res.StatusCode)
	for name, values := range res.Header {
		lower := strings.ToLower(name)
		if strings.HasPrefix(lower, "x-l402-proxy-") || lower == "proxy-authenticate" {
			for _, v := range values {
				fmt.Printf("HEADER %s: %s\n", lower, v)
			}
		}
	}
	fmt.Println("BODY")
	os.Stdout.Write(content)
}

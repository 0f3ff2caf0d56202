// The bundled example server, as a user runs it: a child process on a free port, its routes
// over loopback, and SIGTERM ending it gracefully with exit status 0.

#include "test_server.hpp"

#include "example_process.hpp"

#include <csignal>
#include <cstdio>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

using namespace plinth_test;

TEST_CASE("example server: every route answers as the README says", "[example]")
{
    example_process example;
    client c{example.port()};

    auto hello = c.get("/hello");
    CHECK(hello.body() == "Hello, World!");
    CHECK(hello[http::field::content_type].starts_with("text/plain"));
    CHECK(c.get("/users/42").body() == R"({"id":"42"})");
    CHECK(c.request(http::verb::post, "/echo", "ping").body() == "ping");
    CHECK(c.get("/delay?ms=50").body() == "waited 50 ms");
    CHECK(c.get("/delay?ms=x").result() == http::status::bad_request);

    CHECK(c.get("/suspend?resume_ms=50").body() == "resumed after 50 ms");
    CHECK(c.get("/suspend?timeout_ms=50").result() == http::status::service_unavailable);
    CHECK(c.get("/suspend?timeout_ms=50&on_timeout=resume").body() == "resumed by the timeout handler");
    CHECK(c.get("/suspend?timeout_ms=50&on_timeout=cancel").result() == http::status::service_unavailable);
    CHECK(c.get("/suspend?timeout_ms=30&on_timeout=extend&resume_ms=200").body() == "resumed after 200 ms");
    CHECK(c.get("/offload?ms=20").body() == "worked 20 ms on the pool");
    auto cancelled = c.get("/cancel?retry_after=3");
    CHECK(cancelled.result() == http::status::service_unavailable);
    CHECK(cancelled[http::field::retry_after] == "3");

    auto stats = c.get("/stats").body();
    for (auto key : {"\"connections\":1", "\"requests\":", "\"suspended\":0",
                     "\"resumed\":", "\"cancelled\":", "\"timed_out\":", "\"disconnected\":", "\"completed\":"})
        CHECK(stats.find(key) != std::string::npos);
    CHECK(stats.find("\"timed_out\":1") != std::string::npos);
    CHECK(stats.find("\"cancelled\":2") != std::string::npos);
}

TEST_CASE("example server: SIGTERM answers a request still waiting after the grace 503 + Retry-After and exits 0",
          "[example]")
{
    example_process example{{"--shutdown-grace-ms", "200"}};
    client waiting{example.port()};
    waiting.write_raw("GET /suspend HTTP/1.1\r\nHost: t\r\n\r\n");
    client c{example.port()};
    wait_until([&] { return c.get("/stats").body().find("\"suspended\":1") != std::string::npos; });

    CHECK(example.stop(SIGTERM) == 0);
    auto res = waiting.read();
    CHECK(res.result() == http::status::service_unavailable);
    CHECK(res[http::field::retry_after] == "5");
}

TEST_CASE("example server: the size limit flags set the server's limits", "[example]")
{
    example_process example{{"--max-header-bytes", "200", "--max-body-bytes", "10", "--header-timeout-ms", "5000",
                             "--body-timeout-ms", "5000", "--idle-timeout-ms", "5000", "--write-timeout-ms", "5000",
                             "--shutdown-grace-ms", "100"}};
    client c{example.port()};
    CHECK(c.request(http::verb::post, "/echo", std::string(11, 'x')).result() == http::status::payload_too_large);
    client big{example.port()};
    big.write_raw("GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(300, 'x') + "\r\n\r\n");
    CHECK(big.read().result() == http::status::request_header_fields_too_large);
    CHECK(example.stop(SIGTERM) == 0);
}

TEST_CASE("example server: the count limit flags set the server's limits", "[example]")
{
    example_process example{{"--max-connections", "3", "--max-suspended", "1", "--shutdown-grace-ms", "100"}};
    client waiting{example.port()};
    waiting.write_raw("GET /suspend HTTP/1.1\r\nHost: t\r\n\r\n");
    client second{example.port()};
    wait_until([&] { return second.get("/stats").body().find("\"suspended\":1") != std::string::npos; });
    CHECK(second.get("/suspend").result() == http::status::service_unavailable); // --max-suspended 1
    client third{example.port()};
    CHECK(third.get("/hello").result() == http::status::ok);
    client fourth{example.port()};
    CHECK(fourth.get("/hello").result() == http::status::service_unavailable); // --max-connections 3
    CHECK(example.stop(SIGTERM) == 0);
}

TEST_CASE("example server: an unknown flag is an error, not ignored", "[example]")
{
    std::string binary = PLINTH_EXAMPLE_SERVER;
    std::string command = binary + " --max-header-byte 10 2>/dev/null";
    CHECK(WEXITSTATUS(std::system(command.c_str())) == 2);
}

TEST_CASE("example server: a second signal during the grace stops it at once", "[example]")
{
    example_process example{{"--shutdown-grace-ms", "60000"}};
    client waiting{example.port()};
    waiting.write_raw("GET /suspend HTTP/1.1\r\nHost: t\r\n\r\n");
    client c{example.port()};
    wait_until([&] { return c.get("/stats").body().find("\"suspended\":1") != std::string::npos; });
    example.send(SIGTERM);
    CHECK(c.closed_by_server()); // the graceful stop began: idle connections close
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(example.stop(SIGINT) == 0);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
}

TEST_CASE("example server: SIGINT exits 0 too", "[example]")
{
    example_process example;
    client c{example.port()};
    CHECK(c.get("/hello").result() == http::status::ok);
    CHECK(example.stop(SIGINT) == 0);
}

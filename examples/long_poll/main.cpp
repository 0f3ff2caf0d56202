#include <plinth/plinth.hpp>
#include <mutex>
#include <vector>
namespace http = boost::beast::http;

int main() {
    boost::asio::io_context ioc{1};
    plinth::server srv{ioc, {.address = "127.0.0.1", .port = 8080}};
    std::mutex mutex;
    std::vector<plinth::async_response> waiting;   // parked requests: no thread each
    srv.routes({
        {http::verb::get, "/next", [&](const plinth::request&, plinth::async_response ar) {
            ar.on_timeout([](plinth::async_response a) { a.resume(plinth::make_response(http::status::no_content)); });
            ar.set_timeout(std::chrono::seconds(25));  // nothing new within 25 s: 204, poll again
            std::lock_guard lock(mutex);
            waiting.push_back(ar); }},
        {http::verb::post, "/publish", [&](const plinth::request& req) {
            std::lock_guard lock(mutex);
            for (auto& ar : waiting)                    // any thread may resume; a timed-out one says false
                ar.resume(plinth::text(req.body()));
            waiting.clear();
            return plinth::text("published"); }},
    });
    srv.start();
    ioc.run();
}

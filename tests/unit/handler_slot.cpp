//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// detail/handler_slot.hpp: one operation's memory at a time, for a timer that re-arms itself.

#include <plinth/detail/handler_slot.hpp>

#include <catch2/catch.hpp>

#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>

namespace asio = boost::asio;
using plinth::detail::handler_slot;
using plinth::detail::slot_allocator;

TEST_CASE("handler slot: one block at a time, the heap for a second or a larger one, and the slot again once freed",
          "[handler_slot]")
{
    handler_slot slot;
    void* a = slot.allocate(64);
    void* b = slot.allocate(64); // the slot is taken
    void* big = slot.allocate(4096);
    CHECK(a != b);
    CHECK(b != big);
    slot.deallocate(b);
    slot.deallocate(big);
    slot.deallocate(a);
    CHECK(slot.allocate(128) == a); // free again
    slot.deallocate(a);
}

TEST_CASE("handler slot: a timer that re-arms from its handler finds the slot free each time", "[handler_slot]")
{
    // Asio frees a wait's operation before it calls the handler: the next wait takes the slot.
    asio::io_context ioc;
    asio::steady_timer timer{ioc};
    handler_slot slot;
    void* const storage = slot.allocate(1);
    slot.deallocate(storage);
    int fired = 0;
    int slot_free = 0;
    struct rearm {
        asio::steady_timer& timer;
        handler_slot& slot;
        void* storage;
        int& fired;
        int& slot_free;
        void operator()(boost::system::error_code) const
        {
            void* p = slot.allocate(1);
            slot_free += p == storage;
            slot.deallocate(p);
            if (++fired == 100)
                return;
            timer.expires_after(std::chrono::microseconds(1));
            timer.async_wait(asio::bind_allocator(slot_allocator<void>(slot), *this));
            void* q = slot.allocate(1); // the pending wait has it
            slot_free -= q == storage;
            slot.deallocate(q);
        }
    };
    timer.expires_after(std::chrono::microseconds(1));
    timer.async_wait(asio::bind_allocator(slot_allocator<void>(slot), rearm{timer, slot, storage, fired, slot_free}));
    ioc.run();
    CHECK(fired == 100);
    CHECK(slot_free == 100); // free in each handler, taken by each wait it started
}

// Tests of include/swapalloc/page_table.hpp: the one table of the changes a page may go
// through, the users each state needs, and the counts. A table test: every pair of states.
#include <swapalloc/page_table.hpp>

#include <gtest/gtest.h>

#include <array>
#include <stdexcept>
#include <string>

namespace swapalloc {
namespace {

constexpr std::array<page_state, 4> all_states{page_state::unmapped, page_state::resident,
                                               page_state::evicted, page_state::restoring};

TEST(PageTable, TheTableAllowsExactlyTheDocumentedChanges)
{
  // Rows: from; columns: to (unmapped, resident, evicted, restoring).
  constexpr std::array<std::array<bool, 4>, 4> expected{{
    {false, true, false, false},  // unmapped: mapped under a new block
    {true, false, true, false},   // resident: released, or evicted
    {true, false, false, true},   // evicted: last block freed, or mapped for a restore
    {false, true, true, false},   // restoring: filled (or emptied), or unmapped again
  }};
  for (std::size_t from = 0; from < 4; ++from) {
    for (std::size_t to = 0; to < 4; ++to) {
      EXPECT_EQ(page_change_allowed(all_states[from], all_states[to]), expected[from][to])
        << to_string(all_states[from]) << " -> " << to_string(all_states[to]);
    }
  }
  EXPECT_FALSE(page_change_allowed(page_state::evicted, page_state::resident))
    << "a fresh page mapped over an evicted one would hide its data";
}

TEST(PageTable, OnlyEvictedAndRestoringPagesHaveTheirDataOnTheHost)
{
  EXPECT_FALSE(data_on_host(page_state::unmapped));
  EXPECT_FALSE(data_on_host(page_state::resident));
  EXPECT_TRUE(data_on_host(page_state::evicted));
  EXPECT_TRUE(data_on_host(page_state::restoring));
}

/// A table of 4 pages; page 1 is brought to `state` along a legal path, with one user.
page_table table_with(page_state state)
{
  page_table table(4);
  table.add_users(1, 1, +1);
  table.change(1, 1, page_state::resident);
  if (state == page_state::evicted || state == page_state::restoring) {
    table.change(1, 1, page_state::evicted);
  }
  if (state == page_state::restoring) { table.change(1, 1, page_state::restoring); }
  if (state == page_state::unmapped) {
    table.add_users(1, 1, -1);
    table.change(1, 1, page_state::unmapped);
  }
  return table;
}

TEST(PageTable, RequireChangeNamesThePageItsStateAndItsUsers)
{
  page_table const table = table_with(page_state::evicted);
  try {
    table.require_change(0, 3, page_state::resident);
    FAIL() << "evicted -> resident was allowed";
  } catch (std::logic_error const& error) {
    std::string const what = error.what();
    EXPECT_NE(what.find("page 1 may not change from evicted to resident (1 blocks use it)"),
              std::string::npos)
      << "page 0 (unmapped -> resident) is allowed: the first refused page is named: " << what;
  }
}

TEST(PageTable, EveryRefusedChangeThrowsBeforeAnythingChanges)
{
  for (page_state from : all_states) {
    for (page_state to : all_states) {
      page_table table    = table_with(from);
      bool const users_ok = to == page_state::unmapped ? table.users(1) == 0
                            : data_on_host(to)         ? table.users(1) != 0
                                                       : true;
      bool const allowed  = page_change_allowed(from, to) && users_ok;
      SCOPED_TRACE(std::string(to_string(from)) + " -> " + to_string(to));
      if (allowed) {
        EXPECT_NO_THROW(table.require_change(1, 1, to));
        continue;
      }
      try {
        table.require_change(1, 1, to);
        ADD_FAILURE() << "allowed";
      } catch (std::logic_error const& error) {
        EXPECT_NE(std::string(error.what())
                    .find("page 1 may not change from " + std::string(to_string(from)) + " to " +
                          to_string(to)),
                  std::string::npos)
          << error.what();
      }
      EXPECT_EQ(table.state(1), from) << "nothing changed";
    }
  }
}

TEST(PageTable, UsersDecideWhetherAPageMayBeReleasedOrEvicted)
{
  page_table table(2);
  table.change(0, 2, page_state::resident);
  EXPECT_THROW(table.require_change(0, 1, page_state::evicted), std::logic_error)
    << "a page without blocks has no data to evict";
  table.add_users(0, 0, +1);
  EXPECT_THROW(table.require_change(0, 1, page_state::unmapped), std::logic_error)
    << "a page with a block may not be released";
  EXPECT_NO_THROW(table.require_change(0, 1, page_state::evicted));
  EXPECT_NO_THROW(table.require_change(1, 1, page_state::unmapped));
  EXPECT_THROW(table.require_change(1, 2, page_state::unmapped), std::logic_error)
    << "a run past the end of the range";
}

TEST(PageTable, CountsFollowEveryChangeAndCheckFindsWrongUsers)
{
  page_table table(8);
  EXPECT_EQ(table.count(page_state::unmapped), 8U);
  table.change(0, 5, page_state::resident);
  table.add_users(0, 4, +1);
  table.change(1, 2, page_state::evicted);
  table.change(2, 1, page_state::restoring);
  EXPECT_EQ(table.count(page_state::unmapped), 3U);
  EXPECT_EQ(table.count(page_state::resident), 3U);
  EXPECT_EQ(table.count(page_state::evicted), 1U);
  EXPECT_EQ(table.count(page_state::restoring), 1U);
  EXPECT_EQ(table.parked_pages(), 2U);
  std::vector<std::uint32_t> users{1, 1, 1, 1, 1, 0, 0, 0};
  EXPECT_EQ(table.check(users), "");
  users[3] = 2;
  EXPECT_NE(table.check(users).find("user count (page 3"), std::string::npos);
}

}  // namespace
}  // namespace swapalloc
